"""Turning model outputs into things people look at: label maps and images."""
