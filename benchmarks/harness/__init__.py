"""What every benchmark script shares: the machine and its load, timing, the results writer, training, tuning.

- ``machine``: ``describe()`` (cores, platform, versions) and ``load()`` (1-min load average), ``Stopwatch``.
- ``results``: ``write(out, record, markdown)``: ``out.json`` and ``out.md``, each written atomically.
- ``training``: the frozen features of a dataset's views through the application's protocol (the same
  feature cache as ``rankloss-tf train``), and ``fit``: one P x K training loop for in-memory arrays,
  with a class head for the losses that train one vector per class.
- ``tuning``: the Optuna search of ``fair_comparison`` (one budget per loss).

Scripts import it as ``from harness import ...`` (benchmarks/ is on ``sys.path`` when a script runs).
"""
