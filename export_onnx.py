"""Export a trained embedding model to ONNX: export.py under its earlier name (default --format onnx).

    python export_onnx.py --model runs/RUN                  # RUN/export/best.keras -> RUN/export/best.onnx
    python export_onnx.py --model M.keras --output M.onnx
    python export_onnx.py --model runs/RUN --format litert-int8 --calibration-dir ALIGNED   # any format

train.py already writes export/embedding.onnx beside export/embedding.keras and the SavedModel; this
command exports any other .keras (best.keras, older runs). See export.py for every format.
"""

import sys

from export import build_parser, main

if __name__ == "__main__":
    sys.exit(main(parser=build_parser(__doc__), name="export_onnx"))
