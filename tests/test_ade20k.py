"""The `ade20k` builder (ADEChallengeData2016 layout): the 150 classes of
objectInfo150, 0 -> 255 and v -> v - 1, zips, errors that name the file."""

import zipfile

import numpy as np
from PIL import Image
import pytest

from segjax.data import ade20k
from segjax.data import datasets
from segjax.errors import DataError
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

# The Name column of CSAILVision/sceneparsing objectInfo150.txt, Idx 1..150.
OBJECT_INFO_150 = """\
wall
building, edifice
sky
floor, flooring
tree
ceiling
road, route
bed
windowpane, window
grass
cabinet
sidewalk, pavement
person, individual, someone, somebody, mortal, soul
earth, ground
door, double door
table
mountain, mount
plant, flora, plant life
curtain, drape, drapery, mantle, pall
chair
car, auto, automobile, machine, motorcar
water
painting, picture
sofa, couch, lounge
shelf
house
sea
mirror
rug, carpet, carpeting
field
armchair
seat
fence, fencing
desk
rock, stone
wardrobe, closet, press
lamp
bathtub, bathing tub, bath, tub
railing, rail
cushion
base, pedestal, stand
box
column, pillar
signboard, sign
chest of drawers, chest, bureau, dresser
counter
sand
sink
skyscraper
fireplace, hearth, open fireplace
refrigerator, icebox
grandstand, covered stand
path
stairs, steps
runway
case, display case, showcase, vitrine
pool table, billiard table, snooker table
pillow
screen door, screen
stairway, staircase
river
bridge, span
bookcase
blind, screen
coffee table, cocktail table
toilet, can, commode, crapper, pot, potty, stool, throne
flower
book
hill
bench
countertop
stove, kitchen stove, range, kitchen range, cooking stove
palm, palm tree
kitchen island
computer, computing machine, computing device, data processor, electronic computer, information processing system
swivel chair
boat
bar
arcade machine
hovel, hut, hutch, shack, shanty
bus, autobus, coach, charabanc, double-decker, jitney, motorbus, motorcoach, omnibus, passenger vehicle
towel
light, light source
truck, motortruck
tower
chandelier, pendant, pendent
awning, sunshade, sunblind
streetlight, street lamp
booth, cubicle, stall, kiosk
television, television receiver, television set, tv, tv set, idiot box, boob tube, telly, goggle box
airplane, aeroplane, plane
dirt track
apparel, wearing apparel, dress, clothes
pole
land, ground, soil
bannister, banister, balustrade, balusters, handrail
escalator, moving staircase, moving stairway
ottoman, pouf, pouffe, puff, hassock
bottle
buffet, counter, sideboard
poster, posting, placard, notice, bill, card
stage
van
ship
fountain
conveyer belt, conveyor belt, conveyer, conveyor, transporter
canopy
washer, automatic washer, washing machine
plaything, toy
swimming pool, swimming bath, natatorium
stool
barrel, cask
basket, handbasket
waterfall, falls
tent, collapsible shelter
bag
minibike, motorbike
cradle
oven
ball
food, solid food
step, stair
tank, storage tank
trade name, brand name, brand, marque
microwave, microwave oven
pot, flowerpot
animal, animate being, beast, brute, creature, fauna
bicycle, bike, wheel, cycle
lake
dishwasher, dish washer, dishwashing machine
screen, silver screen, projection screen
blanket, cover
sculpture
hood, exhaust hood
sconce
vase
traffic light, traffic signal, stoplight
tray
ashcan, trash can, garbage can, wastebin, ash bin, ash-bin, ashbin, dustbin, trash barrel, trash bin
fan
pier, wharf, wharfage, dock
crt screen
plate
monitor, monitoring device
bulletin board, notice board
shower
radiator
glass, drinking glass
clock
flag
"""


def test_class_names_are_the_first_names_of_object_info_150():
  official = OBJECT_INFO_150.splitlines()
  assert len(official) == 150
  assert ade20k.CLASS_NAMES == tuple(n.split(',')[0] for n in official)
  assert datasets.get_spec('ade20k').num_classes == 150


def _write(root, folder, name, raw, mode='RGB', seed=0):
  rng = np.random.default_rng(seed)
  (root / 'images' / folder).mkdir(parents=True, exist_ok=True)
  (root / 'annotations' / folder).mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(
      rng.integers(0, 256, raw.shape + (3,), dtype=np.uint8)).convert(mode)
  image.save(root / 'images' / folder / f'{name}.jpg')
  Image.fromarray(raw.astype(np.uint8)).save(
      root / 'annotations' / folder / f'{name}.png')


@pytest.fixture
def copy(tmp_path):
  """An ADEChallengeData2016 folder: 3 training, 2 validation images."""
  root = tmp_path / 'manual' / 'ADEChallengeData2016'
  rng = np.random.default_rng(0)
  raws = {}
  for i, (folder, name) in enumerate([
      ('training', 'ADE_train_00000001'), ('training', 'ADE_train_00000002'),
      ('training', 'ADE_train_00000003'), ('validation', 'ADE_val_00000001'),
      ('validation', 'ADE_val_00000002')]):
    raws[name] = rng.integers(0, 151, (6, 9 + i))
    _write(root, folder, name, raws[name], mode='L' if i == 1 else 'RGB',
           seed=i)
  return tmp_path / 'manual', raws


def _build(manual_dir, tmp_path):
  return datasets.get_builder('ade20k', str(tmp_path / 'tfds'),
                              manual_dir=str(manual_dir))


def test_builds_labels_with_zero_ignored_and_classes_shifted(copy, tmp_path):
  manual, raws = copy
  builder = _build(manual, tmp_path)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 3, 'validation': 2}
  for split in ('train', 'validation'):
    for ex in tfds.as_numpy(builder.as_dataset(split)):
      raw = raws[ex['image_id'].decode()]
      expected = np.array([[255 if v == 0 else v - 1 for v in row]
                           for row in raw])
      np.testing.assert_array_equal(ex['segmentation'][..., 0], expected)
      assert ex['image'].shape == raw.shape + (3,)  # Greyscale -> RGB too.


def test_reads_the_zip(copy, tmp_path):
  manual, _ = copy
  zip_dir = tmp_path / 'zipped'
  zip_dir.mkdir()
  with zipfile.ZipFile(zip_dir / 'ADEChallengeData2016.zip', 'w') as z:
    for path in sorted(manual.rglob('*.*')):
      z.write(path, path.relative_to(manual).as_posix())
  builder = _build(zip_dir, tmp_path)
  assert builder.info.splits['validation'].num_examples == 2


def test_missing_data_is_an_error_with_instructions(tmp_path):
  with pytest.raises(DataError, match='(?s)does not exist.*wget'):
    _build(tmp_path / 'nowhere', tmp_path)
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'x.txt').write_text('x')
  with pytest.raises(DataError, match='(?s)no ADEChallengeData2016.*wget'):
    _build(tmp_path / 'other', tmp_path)


def test_image_without_annotation_names_the_file(copy, tmp_path):
  manual, _ = copy
  (manual / 'ADEChallengeData2016' / 'annotations' / 'validation' /
   'ADE_val_00000002.png').unlink()
  with pytest.raises(DataError,
                     match=r'ADE_val_00000002\.jpg has no annotation'):
    _build(manual, tmp_path)


def test_bad_annotations_name_the_file(copy, tmp_path):
  manual, _ = copy
  folder = manual / 'ADEChallengeData2016' / 'annotations' / 'training'
  raw = np.zeros((6, 9), np.uint8)
  raw[1, 2] = 151
  Image.fromarray(raw).save(folder / 'ADE_train_00000001.png')
  with pytest.raises(DataError, match=r'ADE_train_00000001\.png holds values '
                     r'\[151\]'):
    _build(manual, tmp_path)
  Image.fromarray(np.zeros((2, 2), np.uint8)).save(
      folder / 'ADE_train_00000001.png')
  with pytest.raises(DataError, match=r'ADE_train_00000001\.png is 2x2 '
                     r'\(WxH\) but its image is 9x6'):
    _build(manual, tmp_path)
