"""Face-image geometry shared by the engine's LFW loader and ``fastconv.face`` (Pillow only, no torch).

LFW deep-funneled images are 250x250 with the face centred. An image of another size is first
mapped onto that frame (shorter side scaled to 250, centre 250x250 kept), then the centre
``crop`` x ``crop`` square is cut out and resized to ``size`` x ``size`` (bilinear).
"""
CANONICAL = 250  # LFW image side


def centre_crop_resize(img, crop, size):
    """PIL image -> PIL image of ``size`` x ``size``: the centre ``crop`` square of the 250-px frame."""
    from PIL import Image

    w, h = img.size
    if (w, h) != (CANONICAL, CANONICAL):
        scale = CANONICAL / min(w, h)
        nw, nh = max(CANONICAL, round(w * scale)), max(CANONICAL, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - CANONICAL) // 2, (nh - CANONICAL) // 2
        img = img.crop((left, top, left + CANONICAL, top + CANONICAL))
    off = (CANONICAL - crop) // 2
    img = img.crop((off, off, off + crop, off + crop))
    if crop != size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img
