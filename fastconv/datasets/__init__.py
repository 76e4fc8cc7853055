"""Data sets for the fastconv examples (decoded once and cached under ``fastconv.paths.cache_dir()``)."""
from .lfw_people import LFWPeople, load_lfw_people, stratified_split

__all__ = ["LFWPeople", "load_lfw_people", "stratified_split"]
