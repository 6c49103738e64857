"""fit_with_progress: the driver's bar blocks on the queue and wakes when fit returns, without polling."""

from __future__ import annotations

import queue as stdlib_queue

import pytest
from ray.util.queue import Empty

from components.training.progress import FIT_RETURNED, fit_with_progress


class CountingQueue:
    """ray.util.queue.Queue's get/put_nowait over a local queue, counting the gets that timed out."""

    def __init__(self, refuse_puts_from_driver: bool = False):
        self.items: stdlib_queue.Queue = stdlib_queue.Queue()
        self.timeouts = 0
        self.refuse = refuse_puts_from_driver

    def put_nowait(self, item):
        if self.refuse and item == FIT_RETURNED:
            raise ConnectionError("queue actor lost")
        self.items.put(item)

    def get(self, timeout=None):
        try:
            return self.items.get(timeout=timeout)
        except stdlib_queue.Empty:
            self.timeouts += 1
            raise Empty


def reporting_fit(queue: CountingQueue, steps: list[int], result: str = "result"):
    def fit():
        for step in steps:
            queue.put_nowait({"status": "running", "step": step, "d_loss": 0.5, "images_per_s": 100.0})
        return result

    return fit


def test_returns_fits_result_and_last_report_without_a_timed_out_get():
    queue = CountingQueue()
    result, last = fit_with_progress(reporting_fit(queue, [10, 20, 30]), queue, 30, "dcgan", show=False,
                                     safety_wake_s=600.0)
    assert result == "result"
    assert last["step"] == 30
    assert queue.timeouts == 0  # woken by FIT_RETURNED, never by the timeout
    assert queue.items.empty()


def test_a_failing_fit_raises_after_the_reports_before_it():
    queue = CountingQueue()

    def fit():
        queue.put_nowait({"status": "running", "step": 5})
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        fit_with_progress(fit, queue, 10, "dcgan", show=False, safety_wake_s=600.0)
    assert queue.timeouts == 0


def test_a_lost_queue_falls_back_to_the_safety_wake():
    queue = CountingQueue(refuse_puts_from_driver=True)
    result, last = fit_with_progress(reporting_fit(queue, [7]), queue, 10, "dcgan", show=False, safety_wake_s=0.05)
    assert (result, last["step"]) == ("result", 7)
    assert queue.timeouts >= 1


def test_the_bar_shows_the_seconds_trained_beside_the_losses():
    from components.training.progress import describe

    assert describe({"d_loss": 0.5, "images_per_s": 700.4, "elapsed_s": 42.3}) == "d_loss=0.500 700 img/s 42 s"
