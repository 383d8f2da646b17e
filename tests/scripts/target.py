"""Test trial for the target mode: score = x, model_bytes = 1000 * x (a better score costs size).

The dense baseline scores 1.0 (``baseline_score``); a negative x fails the trial; with save_model the
trial saves a file holding x.
"""
import aup


def save(x):
    with open("model.txt", "w") as handle:
        handle.write(repr(x))


@aup.aup_args
def main(x, save_model=False, **extra):
    if x < 0:
        raise SystemExit("negative x: this trial fails")
    aup.log_metrics(model_bytes=int(1000 * x), baseline_score=1.0)
    if save_model:
        aup.aup_save_model(save, x)
    return x


if __name__ == "__main__":
    main()
