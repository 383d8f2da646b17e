"""Test trial for save_model: saves a file holding x through aup_save_model."""
import aup


def save(x):
    with open("model.txt", "w") as handle:
        handle.write(repr(x))


@aup.aup_args
def main(x):
    aup.aup_save_model(save, x)
    return x


if __name__ == "__main__":
    main()
