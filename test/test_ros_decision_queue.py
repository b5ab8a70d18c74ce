"""The action_selector's decision scheduling without ROS: which frame becomes a decision, which
is skipped and why (rate limit, on_instruction, predating and stale stamps), missing cameras,
and the worker's blocking wait. Plain objects stand in for messages: the queue only stores
them."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vla_embedding_ros.ros.decision_queue import (
    CLOCK_MISMATCH_AFTER_S,
    DecisionQueue,
    Job,
    Skip,
    clock_advice,
    missing_cameras,
    stale_reason,
)

S = 1_000_000_000   # ns per second


def settings(mode='continuous', rate=0.0, max_age=0.0):
    return {'mode': mode, 'max_rate_hz': rate, 'max_image_age_s': max_age}


def queue(cameras=1):
    q = DecisionQueue()
    q.open(cameras)
    return q


def test_the_ros_free_modules_import_without_rclpy():
    code = ('import sys; import vla_embedding_ros.ros.decision_queue, '
            'vla_embedding_ros.ros.selector_outputs, vla_embedding_ros.ros.selector_inputs, '
            'vla_embedding_ros.ros.selector_setup; print(int("rclpy" in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ['0']


def test_a_fresh_first_frame_is_a_job_once():
    q = queue(2)
    assert q.take(settings(), 0.0, 0) == (None, None)       # nothing yet
    assert q.put_frame(1, 'side', 5 * S, 1.0) is False      # the second camera triggers nothing
    assert q.take(settings(), 1.0, 0) == (None, None)
    q.set_instruction('pick it', 2 * S)
    q.set_candidates(np.ones((2, 3), np.float32))
    assert q.put_frame(0, 'top', 6 * S, 2.0) is False
    job, wait = q.take(settings(), 3.0, 7 * S)
    assert isinstance(job, Job) and wait is None
    assert job.msgs == ['top', 'side'] and job.instruction == 'pick it'
    assert job.instruction_seq == 1 and job.candidates.shape == (2, 3)
    assert job.received_at == 2.0 and job.received == [2.0, 1.0]
    assert q.take(settings(), 3.0, 7 * S) == (None, None)  # both frames used


def test_a_frame_replaced_before_use_is_reported_and_a_closed_camera_ignored():
    q = queue(1)
    assert q.put_frame(0, 'a', 1, 0.0) is False
    assert q.put_frame(0, 'b', 2, 0.1) is True              # 'a' was never decided on
    assert q.put_frame(3, 'c', 3, 0.2) is None              # no such camera (topics closing)
    assert q.take(settings(), 1.0, 0)[0].msgs == ['b']
    q.clear()
    assert q.put_frame(0, 'd', 4, 0.3) is None and q.instruction is None


def test_the_rate_limit_waits_and_then_decides():
    q = queue()
    q.put_frame(0, 'a', 0, 0.0)
    assert isinstance(q.take(settings(rate=4.0), 10.0, 0)[0], Job)
    q.put_frame(0, 'b', 0, 10.1)
    item, wait = q.take(settings(rate=4.0), 10.1, 0)
    assert item is None and wait == pytest.approx(0.15)
    assert q.take(settings(rate=4.0), 10.25, 0)[0].msgs == ['b']
    q.put_frame(0, 'c', 0, 10.26)
    assert q.take(settings(rate=0.0), 10.26, 0)[0].msgs == ['c']   # 0: every frame


def test_on_instruction_decides_once_per_instruction_on_a_later_frame():
    q = queue()
    mode = settings('on_instruction')
    q.put_frame(0, 'before any', 1 * S, 0.0)
    skip, _ = q.take(mode, 0.0, 1 * S)
    assert isinstance(skip, Skip) and skip.kind == 'ignored' and skip.routine
    assert not skip.remedy and skip.counter == 'ignored'
    q.set_instruction('pick it', 10 * S)
    q.put_frame(0, 'in flight', 9 * S, 1.0)                # taken before the instruction
    skip, _ = q.take(mode, 1.0, 10 * S + S // 2)
    assert skip.kind == 'ignored_in_flight' and not skip.remedy
    assert 'stamped 1.00 s before the instruction arrived' in skip.reason
    q.put_frame(0, 'after', 11 * S, 2.0)
    job, _ = q.take(mode, 2.0, 11 * S)
    assert job.msgs == ['after'] and job.instruction_seq == 1
    q.decided(job.instruction_seq)
    q.put_frame(0, 'again', 12 * S, 3.0)
    assert q.take(mode, 3.0, 12 * S)[0].kind == 'ignored'   # decided: wait for a new one


def test_frames_predating_the_instruction_for_long_are_a_clock_mismatch():
    q = queue()
    q.set_instruction('pick it', 100 * S)
    q.put_frame(0, 'behind', 40 * S, 0.0)
    waited = 100 * S + int((CLOCK_MISMATCH_AFTER_S + 0.5) * S)
    skip, _ = q.take(settings('on_instruction'), 0.0, waited)
    assert skip.kind == 'clock_mismatch' and skip.remedy.startswith('use mode: continuous')
    assert 'undecided for 1.5 s' in skip.reason and 'this one by 60.00 s' in skip.message
    assert 'chrony' in clock_advice(False, skip.remedy)
    assert 'use_sim_time true' in clock_advice(True, skip.remedy)


def test_a_stale_frame_is_skipped_and_uses_up_the_slot():
    q = queue()
    q.put_frame(0, 'old', 1 * S, 5.0)
    skip, _ = q.take(settings(rate=1.0, max_age=1.0), 5.0, 3 * S)
    assert skip.kind == skip.counter == 'stale' and 'max_image_age_s: 0' in skip.remedy
    assert skip.reason == 'frame 2.00 s old > max_image_age_s 1.0'
    assert q.take(settings(max_age=1.0), 5.0, 3 * S) == (None, None)   # the frame is gone
    q.put_frame(0, 'new', 3 * S, 5.5)
    assert q.take(settings(rate=1.0), 5.5, 3 * S)[1] == pytest.approx(0.5)  # rate counts it
    assert stale_reason(1 * S, 3 * S, 0.0) == ''           # 0: no check
    assert stale_reason(1 * S, 3 * S, 2.5) == ''


def test_the_same_instruction_sample_counts_once():
    q = queue()
    assert not q.is_repeat((1, 7, 'pick'))
    assert q.is_repeat((1, 7, 'pick'))
    assert not q.is_repeat((2, 8, 'pick'))                 # the same text sent again: new


def test_missing_cameras_never_the_first_and_silent_ones_after_the_timeout():
    topics = ['top', 'side', 'wrist']
    job = Job(['t', None, 'w'], 'pick', 1, None, received_at=10.0, received=[10.0, 0.0, 8.0])
    missing, reason = missing_cameras(topics, job, 1.5, 10.0)
    assert missing == ['side', 'wrist']
    assert reason == ("no frame yet from ['side']; no frame within camera_timeout_s 1.5 s from "
                      'wrist (last 2.0 s ago)')
    assert missing_cameras(topics, job, 0.0, 10.0) == (['side'], "no frame yet from ['side']")
    old_first = Job(['t', 's'], 'pick', 1, None, received=[0.0, 9.9])
    assert missing_cameras(topics[:2], old_first, 1.0, 10.0) == ([], '')


def test_the_worker_waits_for_a_frame_and_stops_when_told():
    q = queue()
    got = []
    worker = threading.Thread(target=lambda: got.append(q.next(settings(), lambda: 0)))
    worker.start()
    time.sleep(0.1)
    assert got == []                                       # blocked: nothing to decide
    q.put_frame(0, 'frame', 0, time.monotonic())
    worker.join(5.0)
    assert isinstance(got[0], Job) and got[0].msgs == ['frame']
    worker = threading.Thread(target=lambda: got.append(q.next(settings(), lambda: 0)))
    worker.start()
    q.stop()
    worker.join(5.0)
    assert not worker.is_alive() and got[1] is None
    assert q.next(settings(), lambda: 0) is None           # stopped until start()


def test_a_changed_rate_takes_effect_on_wake():
    q = queue()
    live = settings(rate=0.001)                            # one decision per 1000 s
    q.put_frame(0, 'a', 0, time.monotonic())
    assert isinstance(q.next(live, lambda: 0), Job)
    q.put_frame(0, 'b', 0, time.monotonic())
    got = []
    worker = threading.Thread(target=lambda: got.append(q.next(live, lambda: 0)))
    worker.start()
    time.sleep(0.1)
    assert got == []
    with q.lock:
        live['max_rate_hz'] = 0.0
    q.wake()
    worker.join(5.0)
    assert got and got[0].msgs == ['b']
