"""benchmarks/conditions.py: measured CPU use and load, and the sentence the results tables print from them."""

import sys

import pytest

from benchmarks.conditions import describe_conditions, measured_conditions, run_measured


def test_run_measured_counts_the_commands_cpu_time():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    code, c = run_measured([sys.executable, "-c", busy])
    assert code == 0
    assert c["cpu_seconds"] >= 0.55 and 0 < c["busy_cores"] <= c["cores"] + 0.1
    assert c["busy_cores"] == pytest.approx(c["cpu_seconds"] / c["wall_seconds"])
    assert all(c[k] >= 0 for k in ("load_before", "load_during_mean", "load_during_max", "load_after"))
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"])[0] == 3


def test_measured_conditions_count_this_process_too():
    import time
    with measured_conditions() as c:
        t = time.process_time()
        while time.process_time() - t < 0.4:
            pass
    assert c["cpu_seconds"] >= 0.38 and c["busy_cores"] == pytest.approx(c["cpu_seconds"] / c["wall_seconds"])
    assert c["busy_cores"] > 0.1 and c["cores"] >= 1


def _conditions(busy, load):
    return {"wall_seconds": 100.0, "cpu_seconds": 100.0 * busy, "busy_cores": busy, "cores": 2,
            "load_before": 0.2, "load_during_mean": load, "load_during_max": load + 1, "load_after": 0.3}


def test_sentence_follows_the_figures():
    quiet = describe_conditions([_conditions(1.9, 2.1)])
    assert "no sign of other work" in quiet and "1.90-1.90 cores busy" in quiet and "of 2" in quiet
    shared = describe_conditions([_conditions(1.9, 2.0), _conditions(1.1, 9.0)])
    assert "other work shared the CPU" in shared and "by up to 7.9" in shared and "10.0 max" in shared
    assert "not measured" in describe_conditions([None, None])
    assert "1 not measured" in describe_conditions([_conditions(1.9, 2.0), None])


def test_results_tables_print_the_measured_conditions():
    from recipes import lfw_levers
    from recipes.lfw_view1 import format_table
    run = {"backbone": "resface20", "loss": "am_softmax", "precision": "off", "heads": "", "steps": 6,
           "train_wall_seconds": 9.0, "guard_stopped": "training collapsed at step 6", "conditions": [
               _conditions(1.0, 6.5)]}
    results = {"data": {"train_images": 9, "train_identities": 3, "view2_shared_identities": 5,
                        "view2_identities": 8},
               "align": {"aligned": 2, "fallback": 0, "failed": 0, "skipped_already_done": 0},
               "stages": {}, "schedules": {"all": {"calibrated_images_per_sec": None, "max_steps": 6}},
               "cpu": "Some CPU", "runs": {"am_softmax": run}}
    table = format_table(results)
    assert "nothing else" not in table and "other work shared the CPU" in table
    rows = [{"changed": "(baseline)", "steps": 6, "time_limited": False, "epochs": 1.0, "train_minutes": 1.0,
             "images_per_sec": 1.0, "heldout_final": 0.5, "heldout_selected": None, "selected_step": None,
             "final": {"accuracy_mean": 0.5, "accuracy_std": 0.0, "auc": 0.5}, "delta_final": "+0.00",
             "selected": {"accuracy_mean": 0.5, "accuracy_std": 0.0}, "delta_selected": "+0.00",
             "cpu": "Some CPU", "command": "x", "conditions": [_conditions(1.9, 2.0)]}]
    lever_table = lfw_levers.format_lever_table(rows)
    assert "nothing else" not in lever_table and "no sign of other work" in lever_table
