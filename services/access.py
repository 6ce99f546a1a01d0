"""Who may do what on a shared server. Checked in the handlers, so the API obeys the same rules as
the page (a hidden button is no protection: anyone can call the endpoint with gradio_client).

With no admin secret configured (VICREG_ADMIN_TOKEN unset) the app is a private tool: whoever can
reach it may do everything. With one set it is a public demo:
- the admin (whoever gives the secret) may do everything;
- a visitor may start a run no larger than the Quick CPU demo, which stops by itself after
  `visitor_minutes` (so nobody can hold a free Space for hours), and only that visitor's session
  or the admin can stop it; everyone else watches it live;
- resuming a checkpoint, downloading from the Hub and downloading CIFAR-10 need the secret.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from vicreg.config import TrainConfig

QUICK = "quick_demo"
VISITOR_MINUTES = 10.0


@dataclass(frozen=True)
class Access:
    admin_token: str | None = None
    visitor_minutes: float = VISITOR_MINUTES

    @property
    def public(self) -> bool:
        return bool(self.admin_token)

    def is_admin(self, secret: str | None) -> bool:
        if not self.admin_token:
            return True
        return bool(secret) and hmac.compare_digest(str(secret).encode(), self.admin_token.encode())

    def wrong_secret(self, secret: str | None) -> str | None:
        """A message when a secret was given and is wrong (an empty one means "I am a visitor")."""
        if self.public and secret and not self.is_admin(secret):
            return "Wrong admin secret."
        return None

    def admin_only(self, secret: str | None, action: str) -> str | None:
        """None if the caller may do `action` (words such as "resume training"), else why not."""
        if self.is_admin(secret):
            return None
        if secret:
            return "Wrong admin secret."
        return (f"On this shared server only the admin may {action}; enter the admin secret in the "
                "'Admin secret' box at the top of the page.")

    def visitor_run_error(self, cfg: TrainConfig) -> str | None:
        """None if a visitor may start this run: at most the Quick CPU demo's images per epoch times
        epochs, its batch size and its kNN monitor; else what is too large."""
        q = TrainConfig.from_preset(QUICK)
        too_big = []
        if cfg.train_subset is None or cfg.epochs * cfg.train_subset > q.epochs * q.train_subset:
            too_big.append(f"epochs × train images at most {q.epochs} × {q.train_subset:,} "
                           f"(asked {cfg.epochs} × {'all' if cfg.train_subset is None else f'{cfg.train_subset:,}'})")
        if cfg.batch_size > q.batch_size:
            too_big.append(f"batch size at most {q.batch_size} (asked {cfg.batch_size})")
        if cfg.knn_train > q.knn_train or cfg.knn_test > q.knn_test:
            too_big.append(f"kNN monitor at most {q.knn_train:,} train / {q.knn_test:,} test images")
        if cfg.compile:
            too_big.append("no torch.compile")
        if not too_big:
            return None
        return ("On this shared server a visitor's run may be at most the size of the Quick CPU demo: "
                + "; ".join(too_big) + ". Pick the Quick CPU demo preset, or enter the admin secret.")

    @property
    def visitor_seconds(self) -> float:
        return 60.0 * self.visitor_minutes
