"""Where fastconv finds its data."""
import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def lfw_root():
    """LFW folder: ``$FASTCONV_LFW`` or ``../shared/data/lfw`` beside the repository root.

    It holds ``lfw-deepfunneled/<Name>/<Name>_<NNNN>.jpg`` and the protocol files.
    """
    env = os.environ.get("FASTCONV_LFW")
    if env:
        return pathlib.Path(env).expanduser()
    return (REPO_ROOT / ".." / "shared" / "data" / "lfw").resolve()


def image_dir(root=None):
    """Folder of ``<Name>/<Name>_<NNNN>.jpg``: ``root/lfw-deepfunneled`` when it exists, else ``root``.

    ``root`` defaults to :func:`lfw_root`.
    """
    root = lfw_root() if root is None else pathlib.Path(root)
    sub = root / "lfw-deepfunneled"
    return sub if sub.is_dir() else root


def cache_dir():
    """Cache folder for decoded images: ``$FASTCONV_CACHE`` or ``~/.cache/fastconv``."""
    env = os.environ.get("FASTCONV_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "fastconv"
