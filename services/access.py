"""Who may do what on a shared server. Checked in the handlers, so the API obeys the same rules as
the page (a hidden button is no protection: anyone can call the endpoint with gradio_client).

A public demo (`public`) whenever strangers can reach the app (on a Space, or bound to an address
other than loopback: services/exposure.py) or an admin secret (VICREG_ADMIN_TOKEN) is set:
- the admin (whoever gives the secret) may do everything;
- a visitor may start a run no larger than the Quick CPU demo (images × epochs, batch, views per image),
  in one process, which stops by itself after `visitor_minutes` (so nobody can hold a free Space for
  hours), and only that visitor's session or the admin can stop it; everyone else watches it live.
  (Several processes would share the same CPUs or take every GPU of the server for one visitor: runs of
  more than one are the admin's.)
- resuming a checkpoint, downloading from the Hub and downloading CIFAR-10 need the secret. With no
  secret set there is no admin: these are refused with a message telling the owner how to set one.
A private tool (everyone may do everything) only on loopback with no secret set, or when the owner
opts out with VICREG_OPEN_ACCESS=1 (logged as a warning at start).
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from vicreg.core.config import TrainConfig
from vicreg.core.presets import LONG_DEMO

VISITOR_MINUTES = 10.0
KNN_MONITOR = (1000, 250)  # the per-epoch kNN monitor a visitor's run may have (bank, queries), off in the demos
HOW_TO_SET = ("the owner sets an admin secret named VICREG_ADMIN_TOKEN (a secret in the Space's settings on Hugging "
              "Face, or an environment variable where the app runs) and restarts the app")


@dataclass(frozen=True)
class Access:
    admin_token: str | None = None
    visitor_minutes: float = VISITOR_MINUTES
    reachable: bool = False  # strangers can reach the app (services/exposure.py)
    open_access: bool = False  # VICREG_OPEN_ACCESS=1: the owner lets everyone who reaches it do everything

    @property
    def secret_set(self) -> bool:
        return bool(self.admin_token)

    @property
    def public(self) -> bool:
        """Visitor rules apply (to everyone but the admin)."""
        return self.secret_set or (self.reachable and not self.open_access)

    def is_admin(self, secret: str | None) -> bool:
        if not self.secret_set:
            return not self.public  # a private tool: everyone; public with no secret: no one
        return bool(secret) and hmac.compare_digest(str(secret).encode(), self.admin_token.encode())

    def wrong_secret(self, secret: str | None) -> str | None:
        """A message when a secret was given and is wrong (an empty one means "I am a visitor")."""
        if self.public and secret and not self.is_admin(secret):
            return "Wrong admin secret." if self.secret_set else self.no_secret_note()
        return None

    def admin_only(self, secret: str | None, action: str) -> str | None:
        """None if the caller may do `action` (words such as "resume training"), else why not."""
        if self.is_admin(secret):
            return None
        if not self.secret_set:
            return f"On this public server only the admin may {action}, and no admin secret is set: to allow it, " \
                   f"{HOW_TO_SET}."
        if secret:
            return "Wrong admin secret."
        return (f"On this shared server only the admin may {action}; enter the admin secret in the "
                "'Admin secret' box at the top of the page.")

    def no_secret_note(self) -> str:
        return f"This public server has no admin secret, so there is no admin here: to have one, {HOW_TO_SET}."

    def startup_note(self) -> tuple[int, str]:
        """(logging level, text) for the server log at start: who may do what here, and how to change it."""
        if self.secret_set:
            ignored = " (VICREG_OPEN_ACCESS is ignored while a secret is set)" if self.open_access else ""
            return logging.INFO, f"public demo: visitor rules for everyone; the admin secret lifts them{ignored}"
        if self.open_access:
            return logging.WARNING, ("VICREG_OPEN_ACCESS=1: everyone who can reach this server may do everything "
                                     "(start any run, resume, download)" + (" and it is reachable by other machines"
                                                                           if self.reachable else ""))
        if self.public:
            return logging.WARNING, ("reachable by other machines and no VICREG_ADMIN_TOKEN set: visitor rules apply "
                                     "to everyone and admin-only actions (resume, Hub and CIFAR-10 downloads, larger "
                                     "runs) are refused; set VICREG_ADMIN_TOKEN to have an admin")
        return logging.INFO, "listening on loopback only: a private tool, everything allowed"

    def visitor_run_error(self, cfg: TrainConfig, processes: int = 1) -> str | None:
        """None if a visitor may start this run: at most the 10-minute demo's size (its time budget, or as many
        epochs when the run is sized in epochs, of at most its training images), its batch size, its views per
        image (each view costs a backbone pass, so more views multiply the cost; smaller views only lower it)
        and its monitors, in one process; else what is too large."""
        q = TrainConfig.from_preset(LONG_DEMO)
        too_big = []
        if cfg.train_subset is None or cfg.train_subset > q.train_subset:
            asked = "all" if cfg.train_subset is None else f"{cfg.train_subset:,}"
            too_big.append(f"train images at most {q.train_subset:,} (asked {asked})")
        if cfg.budget_s > q.budget_s or (not cfg.budget_s and cfg.epochs > q.epochs):
            asked = f"{cfg.budget_s:g} s" if cfg.budget_s else f"{cfg.epochs} epochs"
            too_big.append(f"a time budget of at most {q.budget_s:g} s or {q.epochs} epochs (asked {asked})")
        if cfg.batch_size > q.batch_size:
            too_big.append(f"batch size at most {q.batch_size} (asked {cfg.batch_size})")
        if cfg.augment.views > q.augment.views:
            too_big.append(f"views per image at most {q.augment.views} (asked {cfg.augment.views})")
        if cfg.augment.full_views > q.augment.full_views:
            too_big.append(f"full-size views at most {q.augment.full_views} (asked {cfg.augment.full_views})")
        knn_big = cfg.knn_test > KNN_MONITOR[1] or (cfg.knn_test > 0 and cfg.knn_train > KNN_MONITOR[0])
        if knn_big or cfg.watch_images > q.watch_images:
            too_big.append(f"monitors at most {q.watch_images:,} test images, and a kNN monitor of {KNN_MONITOR[0]:,} "
                           f"train / {KNN_MONITOR[1]:,} test images")
        if cfg.compile:
            too_big.append("no torch.compile")
        if processes > 1:
            too_big.append(f"one process (asked {processes})")
        if not too_big:
            return None
        what = ("Pick the Quick CPU demo or the 10-minute CPU demo, or enter the admin secret." if self.secret_set
                else f"Pick the Quick CPU demo or the 10-minute CPU demo. Larger runs need an admin secret, and none "
                     f"is set here: to have one, {HOW_TO_SET}.")
        return ("On this shared server a visitor's run may be at most the size of the 10-minute CPU demo: "
                + "; ".join(too_big) + ". " + what)

    @property
    def visitor_seconds(self) -> float:
        return 60.0 * self.visitor_minutes
