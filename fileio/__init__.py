"""The rules for files that several stages share, each written once (standard library only, except
the strict JPEG check, which imports simplejpeg when called).

- ``atomic``: writing a file (or a model, an image, a JSON) so that a reader or a kill never sees
  half of it: a temporary name beside it, then one rename.
- ``images``: the image file extensions every stage reads, the image-size rule, and the strict
  JPEG check (``jpeg_damage``).
- ``pairs_format``: the generic verification pair list (written by the shard builder, read by
  evaluation).
- ``sha256_of_file``: the checksum the manifest stores and verification recomputes.
- ``align_report`` (imported from its module): the aligned folder's report as align resumes from it
  and the shard builder packs by it (records, source stamps, which crops are training images).
- ``reading``: the one way an input file is opened (``open_regular``, ``read_input_bytes``): regular
  files only (a FIFO would block, ``/dev/zero`` never ends), reads bounded, names of any bytes.
- ``text_lines``: UTF-8 text inputs read line by line, with errors that name the line.
- ``quiet_tensorflow`` (imported from its module by each command): TensorFlow's C++ start-up lines
  filtered out of stderr, the one part here about a stream rather than a file.

A leaf: it imports nothing from the project, so any package may use it.
"""

from fileio.atomic import DISK_FULL_ERRNOS, atomic_output, write_bytes_atomic, write_json_atomic, write_text_atomic
from fileio.hashing import sha256_of_file
from fileio.images import (
                           DOWNSAMPLING,
                           IMAGE_EXTENSIONS,
                           image_size_type,
                           is_image_file,
                           jpeg_damage,
                           parse_image_size,
                           untrainable_reason,
                           validate_image_size,
)
from fileio.pairs_format import GENERIC_HEADER, format_generic_pairs
from fileio.reading import (
                           DEFAULT_MAX_MEGAPIXELS,
                           MAX_IMAGE_BYTES,
                           MB_PER_MEGAPIXEL,
                           InputFileError,
                           InputTooLarge,
                           NotRegularFile,
                           add_max_megapixels_argument,
                           check_regular,
                           is_utf8_name,
                           open_regular,
                           printable_name,
                           read_input_bytes,
)
from fileio.text import TextEncodingError, text_lines

__all__ = [
                           "DEFAULT_MAX_MEGAPIXELS",
                           "DISK_FULL_ERRNOS",
                           "DOWNSAMPLING",
                           "GENERIC_HEADER",
                           "IMAGE_EXTENSIONS",
                           "MAX_IMAGE_BYTES",
                           "MB_PER_MEGAPIXEL",
                           "InputFileError",
                           "InputTooLarge",
                           "NotRegularFile",
                           "TextEncodingError",
                           "add_max_megapixels_argument",
                           "atomic_output",
                           "check_regular",
                           "format_generic_pairs",
                           "image_size_type",
                           "is_image_file",
                           "is_utf8_name",
                           "jpeg_damage",
                           "open_regular",
                           "parse_image_size",
                           "printable_name",
                           "read_input_bytes",
                           "sha256_of_file",
                           "text_lines",
                           "untrainable_reason",
                           "validate_image_size",
                           "write_bytes_atomic",
                           "write_json_atomic",
                           "write_text_atomic",
]
