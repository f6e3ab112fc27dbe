"""Course profiles: ``smoke`` (CI, seconds per notebook) and ``full`` (class).

Every notebook reads its sizes and budgets from here, so that CI and a class run
the same code with different numbers.

Example
-------
>>> p = get_profile("smoke")
>>> p.name, p.epochs > 0
('smoke', True)
>>> get_profile("nope")
Traceback (most recent call last):
...
ValueError: unknown profile 'nope'; choose one of: smoke, full
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets for one way of running the course."""

    name: str
    #: image side for the synthetic set (real data keeps its own size)
    image_size: int
    #: synthetic images per split
    n_train: int
    n_val: int
    n_test: int
    #: training epochs (a notebook's ``epochs`` parameter overrides it)
    epochs: int
    batch_size: int
    #: cap on real-data training images (None = all)
    max_train_images: int | None

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", image_size=32, n_train=800, n_val=300, n_test=300,
                     epochs=3, batch_size=64, max_train_images=1500),
    "full": Profile("full", image_size=64, n_train=4000, n_val=1000, n_test=1000,
                    epochs=15, batch_size=128, max_train_images=None),
}


def get_profile(name: str) -> Profile:
    """Return the named profile or raise a ValueError listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}"
        ) from None
