"""python -m glm_vision.batch"""

from .cli import entry_point

entry_point()
