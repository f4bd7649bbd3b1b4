"""Training in a background thread, watched by a UI that polls `snapshot()`.

No gradio here: the page (app.py), the WebUI tab and the tests share it. One job runs at a
time per `JobRunner`; `cancel()` goes through the loop's should_stop, so a cancelled run
leaves a checkpoint that the next run with the same output_dir resumes from.
"""
import os
import shutil
import tempfile
import threading
import time

IDLE, RUNNING, DONE, FAILED, CANCELLED = "idle", "running", "done", "failed", "cancelled"


class JobBusy(RuntimeError):
    """A second Train while one runs."""


def _copy_atomic(src, dst):
    """Copy through a temporary name in dst's folder: the host never lists a half-written LoRA."""
    folder = os.path.dirname(dst) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dst) + ".", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class TrainingJob:
    """One run of lora_native.train(config) in a thread.

    config: a dict of config keys (or a Config / YAML path). final_dir: where the finished
    LoRA is copied as `<output_name>.safetensors` (the host's LoRA folder); None leaves it in
    output_dir. on_done(path) runs in the job's thread after a successful run."""

    def __init__(self, config, final_dir=None, on_done=None, train_fn=None):
        self.config = config
        self.final_dir = final_dir
        self.on_done = on_done
        self._train = train_fn
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._s = {"state": IDLE, "step": 0, "total": 0, "resume_step": 0, "loss": [], "its": 0.0, "eta": None,
                   "message": "", "checkpoints": [], "lora_path": None, "started": None, "elapsed": 0.0,
                   "error": None}
        self._t0 = None
        self._step0 = 0

    # ---- control ---------------------------------------------------------------------
    def start(self):
        with self._lock:
            self._s.update(state=RUNNING, message="loading the model ...", started=time.time())
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._run, name="lora-native-train", daemon=True)
        self._thread.start()
        return self

    def cancel(self):
        """Ask the loop to stop at the next step; it saves a checkpoint first."""
        self._stop.set()
        with self._lock:
            if self._s["state"] == RUNNING:
                self._s["message"] = "stopping after this step (saving a checkpoint) ..."

    def join(self, timeout=None):
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self):
        with self._lock:
            return self._s["state"] == RUNNING

    def snapshot(self):
        """A copy of the progress, safe to read from any thread: state, step, total, loss
        [(step, loss)], its, eta (s), message, checkpoints, lora_path, elapsed, error."""
        with self._lock:
            s = dict(self._s)
            s["loss"] = list(s["loss"])
            s["checkpoints"] = list(s["checkpoints"])
        if s["started"] is not None and s["state"] == RUNNING:
            s["elapsed"] = time.time() - s["started"]
        return s

    # ---- callbacks (the training thread) ---------------------------------------------
    def _on_start(self, info):
        with self._lock:
            self._s.update(total=info["total_steps"], step=info["resume_step"], resume_step=info["resume_step"],
                           message=("training on %d images" % info["images"] if "images" in info
                                    else "training on %d text samples" % info.get("samples", 0))
                           + (" (resumed at step %d)" % info["resume_step"] if info["resume_step"] else ""))
        self._t0, self._step0 = time.time(), info["resume_step"]

    def _on_step(self, logs):
        # it/s over the whole run (per-step rates jump around too much to read)
        done = logs["step"] - self._step0
        rate = done / max(time.time() - self._t0, 1e-9)
        with self._lock:
            self._s["step"], self._s["total"] = logs["step"], logs["total"]
            self._s["loss"].append((logs["step"], float(logs["loss"])))
            self._s["its"] = rate
            self._s["eta"] = (logs["total"] - logs["step"]) / rate if rate > 0 else None

    def _on_checkpoint(self, path, step):
        with self._lock:
            self._s["checkpoints"].append(path)

    def _on_log(self, info):
        pass

    def _should_stop(self):
        return self._stop.is_set()

    def _run(self):
        from ..train.loop import TrainingInterrupted
        train = self._train
        if train is None:
            from .. import train
        callbacks = {"on_start": self._on_start, "on_step": self._on_step, "on_checkpoint": self._on_checkpoint,
                     "on_log": self._on_log, "should_stop": self._should_stop}
        try:
            result = train(self.config, callbacks=callbacks)
            path = result.lora_path
            if self.final_dir:
                dst = os.path.join(self.final_dir, os.path.basename(path))
                if os.path.abspath(dst) != os.path.abspath(path):
                    _copy_atomic(path, dst)
                path = dst
            with self._lock:
                best = getattr(result, "best_step", None)
                self._s.update(lora_path=path, message="finished %d steps; final loss %.4f%s" % (
                    result.steps, result.final_loss, "" if best is None else "; lowest validation loss %.4f at "
                    "step %d%s" % (result.best_loss, best, " (%s)" % os.path.basename(result.best_path)
                                   if result.best_path else "")))
            if self.on_done is not None:
                try:
                    self.on_done(path)
                except Exception as e:  # the LoRA exists; a host hook failing must not hide it
                    with self._lock:
                        self._s["message"] += " (after-training hook failed: %s)" % e
            with self._lock:
                self._s["state"] = DONE
        except TrainingInterrupted as e:
            with self._lock:
                self._s.update(state=CANCELLED, message="cancelled at step %d; checkpoint %s (Train again with the "
                                                        "same output name resumes from it)" % (e.step, e.checkpoint))
        except BaseException as e:  # shown on the page, not only in a console
            with self._lock:
                self._s.update(state=FAILED, error="%s: %s" % (type(e).__name__, e), message=str(e) or repr(e))
        finally:
            with self._lock:
                if self._s["started"] is not None:
                    self._s["elapsed"] = time.time() - self._s["started"]


class JobRunner:
    """Holds the UI's one job: start() refuses while one runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self.job = None

    def start(self, config, final_dir=None, on_done=None, train_fn=None):
        with self._lock:
            if self.job is not None and self.job.running:
                raise JobBusy("a training run is already going (step %d of %d); cancel it or wait for it to end"
                              % (self.job.snapshot()["step"], self.job.snapshot()["total"]))
            self.job = TrainingJob(config, final_dir, on_done, train_fn).start()
            return self.job

    def cancel(self):
        job = self.job
        if job is not None and job.running:
            job.cancel()
            return True
        return False

    def snapshot(self):
        job = self.job
        return job.snapshot() if job is not None else dict(TrainingJob(None).snapshot())
