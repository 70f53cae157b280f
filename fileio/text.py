"""Reading the project's text inputs (pairs, lists, people files): UTF-8, errors that name the line.

A byte-order mark at the start (what Windows Notepad writes) is dropped: kept, it would become part
of the first entry's name and lose that entry. The file must be a regular file (fileio.reading).
"""

from fileio.reading import open_regular

BOM = "\ufeff"


class TextEncodingError(ValueError):
    """A text input that is not UTF-8; the message names the file, the line and the fix."""


def text_lines(path):
    """Yield (line number from 1, line without its newline) of a UTF-8 text file, one line at a time.

    A byte sequence that is not UTF-8 raises TextEncodingError naming the file and line (Python's own
    UnicodeDecodeError names neither).
    """
    with open_regular(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
                yield lineno, (line[1:] if lineno == 1 and line.startswith(BOM) else line)
            except UnicodeDecodeError as e:
                raise TextEncodingError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                        f"{e.start + 1}); save the file as UTF-8") from None
