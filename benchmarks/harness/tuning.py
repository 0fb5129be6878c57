"""The tuned comparison's search: one Optuna budget per loss over its own parameters, the learning rate and K.

``SPACES`` says what is searched for each loss (its keyword arguments of
``rankloss_tf.losses.get``); every loss also draws the learning rate (log, the
protocol's range) and K in {2, 4, 8} (P = batch / K). ``tune`` runs a seeded
TPE study of ``trials`` trials on an objective the caller gives (train on the
search classes, score Recall@1 on the validation classes).
"""

import time

__all__ = ["SAMPLES_PER_CLASS", "SPACES", "TPE_STARTUP", "split_setting", "suggest", "tune"]

TPE_STARTUP = 10  # Optuna's default: the first 10 trials of a study are drawn at random
SAMPLES_PER_CLASS = (2, 4, 8)
# loss -> {parameter: (low, high, log scale)}
SPACES = {
    "contrastive": {"margin": (0.1, 1.5, False)},
    "triplet_semihard": {"margin": (0.01, 1.0, False)},
    "triplet_hard": {"margin": (0.01, 1.0, False)},
    "npair": {"l2_reg": (1e-4, 1e-1, True)},
    "angular": {"alpha": (25.0, 55.0, False)},
    "npair_angular": {"alpha": (25.0, 55.0, False), "lam": (0.25, 4.0, True)},
    # Today's losses (issue 31): ranges around each paper's setting and PML's defaults.
    "multi_similarity": {"alpha": (0.5, 10.0, True), "beta": (10.0, 80.0, False), "base": (0.3, 0.8, False)},
    "supcon": {"temperature": (0.02, 0.5, True)},
    "ntxent": {"temperature": (0.02, 0.5, True)},
    "proxy_anchor": {"margin": (0.0, 0.3, False), "alpha": (8.0, 64.0, True)},
    "proxy_nca": {"softmax_scale": (1.0, 32.0, True)},
    "arcface": {"margin": (10.0, 45.0, False), "scale": (8.0, 64.0, True)},
    "cosface": {"margin": (0.1, 0.5, False), "scale": (8.0, 64.0, True)},
}


def suggest(trial, loss, learning_rates):
    """Optuna suggestions for one loss: the setting {loss kwargs..., learning_rate, samples_per_class}."""
    for name, (low, high, log) in SPACES[loss].items():
        trial.suggest_float(name, low, high, log=log)
    trial.suggest_float("learning_rate", *learning_rates, log=True)
    trial.suggest_categorical("samples_per_class", list(SAMPLES_PER_CLASS))
    return dict(trial.params)


def split_setting(setting):
    """(loss kwargs, learning rate, K) of a setting."""
    params = {k: v for k, v in setting.items() if k not in ("learning_rate", "samples_per_class")}
    return params, setting["learning_rate"], setting["samples_per_class"]


def tune(loss, objective, trials, seed, learning_rates):
    """Runs the search; returns (best setting, its objective value, all trials).

    Args:
        loss: a ``SPACES`` name.
        objective: ``objective(setting) -> float`` to maximise (validation Recall@1), or None for a
            failed run (scored 0).
        trials: the budget.
        seed: the sampler's seed.
        learning_rates: (low, high) of the learning rate, drawn on a log scale.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def run(trial):
        setting = suggest(trial, loss, learning_rates)
        started = time.perf_counter()
        value = objective(setting)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return 0.0 if value is None else value

    sampler = optuna.samplers.TPESampler(n_startup_trials=TPE_STARTUP, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(run, n_trials=trials)
    history = [{"params": t.params, "recall@1": t.value, "seconds": t.user_attrs["seconds"]} for t in study.trials]
    return study.best_trial.params, study.best_value, history
