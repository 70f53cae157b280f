"""Who is in this photo? Enroll people into a gallery file, then search it.

    python identify.py enroll --gallery staff.gallery --input-dir PEOPLE/ --model runs/RUN
    python identify.py search --gallery staff.gallery PHOTO [PHOTO ...] [--top-k 5]

enroll: PEOPLE/<name>/<photos> (any number per person); a person's template is the normalised mean of
their photos' features (the alignment of training, evaluation's flip-concatenated features). Running
it again adds new people and replaces those whose folder is given again; everyone else stays as
enrolled, without recomputing. Every photo that cannot be aligned is named; a person with no usable
photo is not enrolled.

search: the top-k enrolled people by cosine similarity for each photo, and the answer: the best
one if its similarity is above the open-set threshold, else "unknown". The threshold is the model's
own (its evaluation report in RUN/eval/, written by evaluate.py) or --threshold; the output says which.

The gallery file (a .npz archive; docs/DESIGN.md) holds the templates, names, source photos and the
fingerprint of the model that made them: searching or enrolling with another model is refused.
The work is done by the inference package; this file parses flags.
"""

import argparse
import json
import os
import sys

from verify import add_model_arguments, add_quality_argument, add_threshold_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{enroll,search}")

    enroll = commands.add_parser("enroll", help="add or replace people in a gallery from a folder per person",
                                 description="Enroll every PEOPLE/<name>/ folder into the gallery (created if new).")
    enroll.add_argument("--gallery", required=True, metavar="G", help="gallery file (created, or updated in place)")
    enroll.add_argument("--input-dir", required=True, metavar="PEOPLE",
                        help="one subfolder per person with their photos (JPEG, PNG, BMP; any size)")
    add_model_arguments(enroll, "the model of an existing gallery, else the newest run under --runs-dir, else the "
                                "starter model")

    search = commands.add_parser("search", help="identify the person in each photo",
                                 description="Top-k enrolled people for each photo; 'unknown' under the threshold.")
    search.add_argument("--gallery", required=True, metavar="G", help="gallery file made by identify.py enroll")
    search.add_argument("photos", nargs="+", metavar="PHOTO", help="photos to identify")
    search.add_argument("--top-k", type=int, default=5, help="candidates listed per photo (default 5)")
    add_model_arguments(search, "the model recorded in the gallery")
    add_threshold_arguments(search, "the best candidate when its cosine similarity > COSINE, else unknown")
    add_quality_argument(search)
    search.add_argument("--json", action="store_true", help="print one JSON object per photo")
    return parser


def print_enroll(summary) -> None:
    def listed(names):
        return f" ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if names else ""

    print(f"gallery {summary.gallery}: added {len(summary.added)}{listed(summary.added)}, replaced "
          f"{len(summary.replaced)}{listed(summary.replaced)}, kept {summary.kept} unchanged; "
          f"{summary.photos} photos read, {len(summary.failed)} failed")
    if summary.failed:
        print("photos left out (not aligned):")
        print("\n".join(f"  {record.note()}" for record in summary.failed))
    if summary.notes:
        print("notes:")
        print("\n".join(f"  {note}" for note in summary.notes))
    if summary.skipped:
        print("not enrolled:")
        print("\n".join(f"  {name}: {why}" for name, why in summary.skipped.items()))
    print(f"model: {summary.model}")


def print_search(results, threshold, model, note, as_json) -> None:
    if as_json:
        for result in results:
            print(json.dumps({"photo": result.photo, "name": result.name, "candidates": result.candidates,
                              "status": result.record.status, "detail": result.record.detail,
                              "quality": result.record.quality,
                              "threshold": threshold.cosine, "threshold_source": threshold.source,
                              "far_target": threshold.far_target,
                              "threshold_note": note}))
        return
    for result in results:
        if result.name is None:
            print(f"{result.photo}: not searched: {result.record.note()}")
            continue
        best_name, best = result.candidates[0]
        answer = (f"{result.name} (cosine {best:.4f} > threshold {threshold.cosine:.4f})" if result.name == best_name
                  else f"unknown (best {best_name}, cosine {best:.4f} <= threshold {threshold.cosine:.4f})")
        print(f"{result.photo}: {answer}; face quality {result.record.quality:.2f}")
        for rank, (name, cosine) in enumerate(result.candidates, start=1):
            print(f"  {rank}. {name}  {cosine:.4f}")
        if result.record.note():
            print(f"  note: {result.record.note()}")
    print(threshold.description)
    if note:
        print(note)
    print(f"model: {model}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow

    quiet_tensorflow()
    from engines.loading import load_model
    from inference import enroll_folder, search_photos

    try:
        model = load_model(args.model, args.engine, args.runs_dir) if args.model else None
        if args.command == "enroll":
            if model is None and not os.path.exists(args.gallery):  # a new gallery: the newest run's model
                model = load_model(None, args.engine, args.runs_dir)
            summary = enroll_folder(args.gallery, args.input_dir, model, args.fallback, args.engine,
                                    progress=not args.no_progress, max_megapixels=args.max_megapixels)
            print_enroll(summary)
            return 0 if (summary.added or summary.replaced) else 1
        if args.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
        results, threshold, described, note = search_photos(args.gallery, args.photos, model, args.top_k, args.threshold,
                                                      args.eval_report, args.fallback, args.engine,
                                                      progress=not args.no_progress, min_quality=args.min_quality,
                                                      max_megapixels=args.max_megapixels, far=args.far)
    except (FileNotFoundError, ValueError) as error:  # GalleryError, PhotoError, ThresholdError are ValueErrors
        print(f"identify {args.command}: error: {error}", file=sys.stderr)
        return 1
    print_search(results, threshold, described, note, args.json)
    return 0 if any(result.name is not None for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
