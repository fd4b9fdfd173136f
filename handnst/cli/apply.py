"""`handnst apply`: stylize photographs with a trained network, one forward pass each."""

import os
import sys

from handnst.cli.common import _check_report_path, _formatter, _logger, _positive_int, _write_report
from handnst.errors import InputError

APPLY_EPILOG = """\
examples:
  handnst apply handnst/data/models/swirls-w16.h5 photo.jpg -o out.jpg      # the model that ships with handnst
  handnst apply painting.h5 photo.jpg -o out.png --size 1024             # longer side 1024 px
  handnst apply painting.h5 a.jpg b.png c.jpg -o stylized/               # several photos: a folder
  handnst apply painting.h5 photo.jpg -o out.jpg --preserve-color        # keep the photo's colours

A model is what `handnst train` writes. The picture keeps the photo's size unless --size says
otherwise (memory is checked first, naming a size that fits); sides that are not multiples of 4 are
reflection-padded for the network and cropped back. With several photos OUT is a folder (created if
needed) and each picture keeps its photo's name. Every photo is read before the first picture is
written, so a bad one stops the command with nothing written.
"""


def _add_apply_parser(sub):
    p = sub.add_parser(
        "apply", help="stylize photographs with a network trained by `handnst train` (one pass each)",
        description="Run a trained transformation network (Johnson et al.) on photographs: one forward\n"
                    "pass per photo, no VGG19 and no optimization.",
        formatter_class=_formatter, epilog=APPLY_EPILOG,
    )
    p.add_argument("model", metavar="MODEL", help="a model file written by `handnst train` (.h5)")
    p.add_argument("photos", metavar="PHOTO", nargs="+", help="the photograph(s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image for one photo (format from the extension); a folder for several")
    p.add_argument("--size", type=_positive_int, default=None, metavar="N",
                   help="longer side of the pictures in pixels (default: each photo's own size)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu (NumPy, default) or gpu (CuPy)")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep the photo's colours (the network's luminance, the photo's chrominance)")
    p.add_argument("--json", metavar="REPORT", help="write a JSON report: outputs, sizes, seconds per photo")
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")


def _outputs(photos, output):
    """The output path of every photo, checked before anything runs; the folder to create, if any."""
    from handnst.image.io import _writable_extensions, check_output_path
    several = len(photos) > 1
    if not several and not os.path.isdir(output):
        check_output_path(output)
        return [output], None
    folder = output
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InputError(f"-o {folder!r} is a file, but {len(photos)} photos need a folder; give a folder "
                         "(it is created if needed)")
    parent = os.path.dirname(os.path.abspath(folder.rstrip(os.sep) or folder))
    if not os.path.isdir(folder) and not os.path.isdir(parent):
        raise InputError(f"the folder {parent} (for -o {folder!r}) does not exist; create it first")
    if not os.access(folder if os.path.isdir(folder) else parent, os.W_OK):
        raise InputError(f"cannot write into {folder!r}: permission denied; choose another folder")
    writable = _writable_extensions()
    paths, seen = [], {}
    for photo in photos:
        stem, ext = os.path.splitext(os.path.basename(os.fspath(photo)))
        ext = ext.lower() if ext.lower() in writable and ext.lower() != ".gif" else ".png"
        path = os.path.join(folder, stem + ext)
        if path in seen:
            raise InputError(f"photos {seen[path]!r} and {photo!r} would both be written to {path!r}; "
                             "rename one, or run them separately")
        seen[path] = photo
        paths.append(path)
    return paths, (None if os.path.isdir(folder) else folder)


def _cmd_apply(args):
    from handnst import apply as A
    from handnst.image import save_image
    _check_report_path(args.json)
    paths, create = _outputs(args.photos, args.output)
    timings = {}
    written = []

    def save(index, picture):
        if create is not None and not os.path.isdir(create):
            os.mkdir(create)
        written.append(save_image(picture, paths[index]))
        if not args.quiet and len(paths) > 1:
            print(f"handnst: wrote {paths[index]} ({picture.size[0]}x{picture.size[1]})", file=sys.stderr)
        sizes.append(list(picture.size))

    sizes = []
    A.apply(args.model, list(args.photos), size=args.size, device=args.device, preserve_color=args.preserve_color,
            on_picture=save, log=_logger(args), timings=timings)
    seconds = timings.get("seconds", [])
    if len(written) == 1:
        w, h = sizes[0]
        print(f"wrote {written[0]} ({w}x{h}) in {seconds[0]:.2f} s")
    else:
        print(f"wrote {len(written)} pictures to {args.output} in {sum(seconds):.1f} s "
              f"({sum(seconds) / max(len(seconds), 1):.2f} s per photo)")
    if args.json:
        _write_report(args.json, {"model": args.model, "outputs": written, "photos": list(args.photos),
                                  "sizes": sizes, "seconds": seconds, "load_seconds": timings.get("load_seconds"),
                                  "options": {"size": args.size, "device": args.device,
                                              "preserve_color": args.preserve_color}})
        print(f"wrote {args.json}")
    return 0
