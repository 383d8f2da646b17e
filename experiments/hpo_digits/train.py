"""Trial script: an sklearn MLP on the bundled digits data set (no download), Auptimizer style.

Run by aup as ``train.py <job config>``; by hand: ``python train.py example_config.json``.
"""
import pickle
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline

import aup


def save(model):
    """Called by @aup.aup_args inside aup_models/<folder_name>/ when the config has save_model."""
    with open("model.pkl", "wb") as handle:
        pickle.dump(model, handle)


@aup.aup_args
def main(learning_rate, hidden_size, epochs=30, seed=0):
    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.3, random_state=seed,
                                                        stratify=labels)
    model = make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(hidden_size,), learning_rate_init=learning_rate, max_iter=epochs, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    accuracy = model.score(x_test, y_test)
    mlp = model[-1]
    aup.log_metrics(accuracy=accuracy, param_count=int(sum(w.size for w in mlp.coefs_ + mlp.intercepts_)),
                    train_loss=float(mlp.loss_))
    aup.aup_save_model(save, model)
    return accuracy


if __name__ == "__main__":
    main()
