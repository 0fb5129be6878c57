"""What this machine can hold: an image size whose batches cannot fit in memory is refused before any work.

An ``--image-size`` of 100,000 asks for 120 GB of float pixels per image: left
to TensorFlow it ends in an out-of-memory traceback deep in the first batch,
or in the kernel's OOM killer, after the run directory and caches are written.
``check_image_memory`` refuses it first, with the figures: one batch of
``batch`` float32 RGB images of that side may take at most
``MEMORY_SHARE`` of the memory this process may use (the machine's, or its
control group's limit when lower). Activations take more than the pixels:
a size that passes can still run out of memory, which the command line then
reports in one line (exit 2).
"""

import os

__all__ = ["EVALUATION_PIXELS", "MEMORY_SHARE", "check_image_memory", "evaluation_batch", "memory_bytes"]

# The share of memory one batch's float32 pixels may take.
MEMORY_SHARE = 0.5
# Images x pixels per evaluation batch: 256 images up to 64 x 64, fewer above (20 at 224 x 224), so embedding
# the held-out images takes memory bounded by the batch, not by the image size (the small CNN's activations at
# 224 px took 5.5 GB for a batch of 256).
EVALUATION_PIXELS = 256 * 64 * 64
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_bytes():
    """The memory this process may use, in bytes: the physical memory, or the control group's limit when lower.

    Example:
    >>> memory_bytes() > 0
    True
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            with open(path, encoding="ascii") as handle:
                limit = handle.read().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def check_image_memory(image_size, batch, role="--image-size"):
    """Refuses an image size whose batch of float32 RGB pixels alone exceeds ``MEMORY_SHARE`` of the memory.

    Args:
        image_size: the side (int) or ``(height, width)``; None passes.
        batch: images per batch.
        role: how to name the size in the message.

    Raises:
        ValueError: the batch cannot fit, with the figures and the largest side that fits.

    Example:
    >>> check_image_memory(224, 128)
    >>> check_image_memory(100_000, 128)
    Traceback (most recent call last):
    ...
    ValueError: --image-size 100000: one batch of 128 images of 100000 x 100000 pixels takes ... Received: --image-size=100000
    """
    if image_size is None:
        return
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)[:2]
    need, allowed = batch * height * width * 3 * 4, int(memory_bytes() * MEMORY_SHARE)
    if need <= allowed:
        return
    side = int((allowed / (batch * 3 * 4)) ** 0.5)
    shown = image_size if isinstance(image_size, int) else f"{height}x{width}"
    raise ValueError(f"{role} {shown}: one batch of {batch} images of {height} x {width} pixels takes "
                     f"{need / 2**30:,.0f} GiB as float32, over half of this machine's {memory_bytes() / 2**30:.0f} GiB; pass a smaller "
                     f"{role} (the pixels alone fit up to {side}; the model's activations take several times more). "
                     f"Received: {role}={shown}")


def evaluation_batch(image_size):
    """Images per batch when the held-out images are embedded: ``EVALUATION_PIXELS`` over the image's pixels.

    Args:
        image_size: the side (int) or ``(height, width, ...)``; None: the size is not known (32 images).

    Example:
    >>> evaluation_batch(32), evaluation_batch(64), evaluation_batch(224), evaluation_batch((480, 640))
    (256, 256, 20, 8)
    """
    if image_size is None or (not isinstance(image_size, int) and None in tuple(image_size)[:2]):
        return 32
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)[:2]
    return max(8, min(256, EVALUATION_PIXELS // (int(height) * int(width))))
