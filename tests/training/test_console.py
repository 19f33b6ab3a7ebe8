"""The epoch line's wording and choice of metrics (the end-to-end check against a run's own
numbers is tests/integration/test_console.py)."""

import warnings

from recsys.training.console import epoch_line, quiet, shown_metrics


def test_shown_metrics_put_the_monitor_first_then_ndcg_and_hr_at_its_cutoff():
    names = ["hr@1", "hr@10", "ndcg@1", "ndcg@10", "mrr@1", "mrr@10"]
    assert shown_metrics("ndcg@10", names) == ["ndcg@10", "hr@10"]
    assert shown_metrics("hr@1", names) == ["hr@1", "ndcg@1"]
    assert shown_metrics("mrr@10", names) == ["mrr@10", "ndcg@10", "hr@10"]
    # a next-action monitor, then the ranking metrics at 10 (or the smallest cut-off logged)
    assert shown_metrics("action_nll", ["action_nll", *names]) == ["action_nll", "ndcg@10", "hr@10"]
    assert shown_metrics("action_nll", ["action_nll", "hr@5", "ndcg@5", "hr@20"]) == ["action_nll", "ndcg@5", "hr@5"]


def test_epoch_line():
    valid = {"hr@10": 0.07104, "ndcg@10": 0.04116, "hr@1": 0.01}
    assert epoch_line(3, 7.12345, valid, "ndcg@10", 12.34, best=True) == \
        "epoch 3  loss 7.1235  valid ndcg@10 0.0412 hr@10 0.0710  12.3s  best"
    assert epoch_line(4, None, valid, "ndcg@10", None, best=False) == "epoch 4  valid ndcg@10 0.0412 hr@10 0.0710"


def test_quiet_hides_library_deprecations_but_not_other_warnings():
    def warn_from(module: str, category: type[Warning], text: str) -> None:
        exec(compile("import warnings\nwarnings.warn(text, category)", module, "exec"),
             {"__name__": module, "text": text, "category": category})

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet():
            warn_from("pytorch_lightning.utilities._pytree", FutureWarning, "old api")
            warn_from("torch.utils._pytree", DeprecationWarning, "old api")
            warn_from("recsys.data.events", UserWarning, "column 3 has blanks")
            warn_from("pytorch_lightning.trainer", UserWarning, "your dataloader is empty")
        warn_from("torch.utils._pytree", DeprecationWarning, "after the block")
    assert [str(w.message) for w in seen] == ["column 3 has blanks", "your dataloader is empty", "after the block"]
