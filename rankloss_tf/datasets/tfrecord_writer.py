"""``python -m rankloss_tf.datasets.tfrecord_writer FOLDER PREFIX``: a class folder to TFRecord files.

The command's own module: ``rankloss_tf.datasets`` imports ``datasets.tfrecord``
(``write_folder``, ``load_tfrecord``), and a module the package has imported
before ``python -m`` runs it as ``__main__`` is run twice (runpy's
RuntimeWarning); nothing imports this one.
"""

import argparse
import sys

from rankloss_tf.datasets.tfrecord import write_folder

__all__ = ["main"]


def main(argv=None):
    """Writes a class folder's readable images as TFRecord files (``write_folder``).

    Exits 0, or 2 with one line naming the bad input.

    Example:
    >>> main(["photos", "/data/photos"])  # doctest: +SKIP
    Wrote 1 files: --dataset 'tfrecord:/data/photos-*.tfrecord'
    0
    """
    parser = argparse.ArgumentParser(prog="python -m rankloss_tf.datasets.tfrecord_writer",
                                     description="Writes a class folder's readable images as TFRecord files "
                                                 "(image/encoded, image/class/label, image/class/text).")
    parser.add_argument("folder", help="a folder with one sub-folder of images per class")
    parser.add_argument("prefix", help="output prefix: PREFIX-00000-of-0000N.tfrecord")
    parser.add_argument("--records-per-file", type=int, default=10_000)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files of those names")
    args = parser.parse_args(argv)
    try:
        paths = write_folder(args.folder, args.prefix, args.records_per_file, args.overwrite)
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    sys.stdout.write(f"Wrote {len(paths)} files: --dataset 'tfrecord:{args.prefix}-*.tfrecord'\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
