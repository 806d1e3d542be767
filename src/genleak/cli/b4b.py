"""CLI commands of the B4B encoder API: ``genleak b4b {serve,train-encoder,admin,calibrate,simulate}``.

``b4b train-encoder`` trains the API's victim encoder; ``train encoder`` is the FID feature extractor.

Only typer is imported at module level; torch, FastAPI and SQLAlchemy load inside the commands, so
``genleak --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from genleak.cli.args import group, out_option
from genleak.errors import GenleakError

DB_HELP = ("state database: a SQLAlchemy URL (sqlite:///b4b.db, postgresql+psycopg://...) or a SQLite file path; "
           "create it first with `genleak b4b admin init`")


def _store(db: str):  # noqa: ANN202 - return type imported lazily
    from genleak.b4b.store import StateStore

    return StateStore(db, create=False)


def _fmt_status(st) -> list[str]:  # noqa: ANN001
    return [st.name, st.policy, "active" if st.active else "revoked", str(st.n_queries), str(st.n_requests),
            f"{st.coverage:.4f}", f"{st.sigma:.4g}", st.transform]


def register(app: typer.Typer) -> None:
    """Add the B4B commands to the genleak app."""
    b4b = group(app, "b4b")

    @b4b.command("serve")
    def serve_encoder(
        model: Path = typer.Option(..., "--model", help="encoder folder (from `genleak b4b train-encoder` or Encoder.save)"),
        db: str = typer.Option("b4b.db", "--db", help=DB_HELP),
        port: int = typer.Option(8000, "--port", help="TCP port"),
        host: str = typer.Option("127.0.0.1", "--host", help="interface to bind (loopback by default)"),
        config: Path | None = typer.Option(None, "--config", help="B4B config file (YAML/JSON/TOML; a `defense:` section is used if present); default: the database's, or the paper's for a new database"),
        max_batch: int = typer.Option(256, "--max-batch", help="most images per request (more -> 413)"),
        workers: int = typer.Option(1, "--workers", help="uvicorn worker processes (they share state through --db)"),
        threads: int = typer.Option(1, "--threads", help="torch threads per inference call"),
        sqlite_sync: str = typer.Option("FULL", "--sqlite-sync", help="SQLite synchronous pragma: FULL (fsync every commit) or NORMAL"),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
        api_docs: bool = typer.Option(False, "--api-docs", help="serve /docs, /redoc and /openapi.json (the pages load scripts from a CDN)"),
    ) -> None:
        """Serve an encoder over HTTP with the B4B defense in the request path (POST /v1/embed)."""
        from genleak.b4b.server import ServerSettings, serve

        if max_batch < 1 or workers < 1 or threads < 1:
            raise GenleakError("--max-batch, --workers and --threads must be >= 1")
        if not 1 <= port <= 65535:
            raise GenleakError(f"--port must be in 1..65535, got {port}")
        settings = ServerSettings(model=str(model), db=db, config=str(config) if config else None, max_batch=max_batch,
                                  torch_threads=threads, sqlite_synchronous=sqlite_sync, api_docs=api_docs)
        serve(settings, host=host, port=port, workers=workers, log_level=log_level,
              announce=lambda msg: typer.echo(msg, err=True))

    @b4b.command("train-encoder")
    def train_encoder(
        out: Path = typer.Option(..., "--out", help="folder to write the encoder to"),
        n_images: int = typer.Option(6000, "--n-images", help="training images drawn from the built-in broad world"),
        epochs: int = typer.Option(10, "--epochs"),
        embed_dim: int = typer.Option(64, "--embed-dim"),
        width: int = typer.Option(32, "--width", help="CNN width (channels of the first layer)"),
        seed: int = typer.Option(0, "--seed"),
        threads: int = typer.Option(2, "--threads", help="torch threads"),
    ) -> None:
        """Train the offline default victim: a small self-supervised (InfoNCE) CNN on built-in data."""
        import torch

        from genleak.b4b import data
        from genleak.b4b.encoder import train_simclr_encoder
        from genleak.b4b.stealing import linear_probe_accuracy

        if n_images < 256 or epochs < 1:
            raise GenleakError("--n-images must be >= 256 and --epochs >= 1")
        torch.set_num_threads(threads)
        images = data.sample_world(n_images, seed=seed + 1)
        enc = train_simclr_encoder(images, embed_dim=embed_dim, width=width, epochs=epochs, seed=seed)
        task = data.digits_task()
        acc = linear_probe_accuracy(enc.embed(task.x_train), task.y_train, enc.embed(task.x_test), task.y_test, c=0.1)
        enc.meta["digits_probe_accuracy"] = round(acc, 2)
        enc.save(out)
        typer.echo(f"saved {out} (embedding dim {enc.embed_dim}, fingerprint {enc.fingerprint()}); "
                   f"downstream digits linear probe: {acc:.2f}%")

    admin = typer.Typer(help="Create a B4B state database; create, revoke and inspect its API users.", no_args_is_help=True)

    @admin.command("init")
    def admin_init(
        db: str = typer.Option("b4b.db", "--db", help=DB_HELP),
        config: Path | None = typer.Option(None, "--config", help="B4B config to fix now (default: the first server's --config)"),
    ) -> None:
        """Create a new state database (SQLite files are created owner-only, mode 0600)."""
        from genleak.b4b.config import load_config
        from genleak.b4b.store import StateStore

        cfg = load_config(config) if config else None  # a bad config fails before anything is created
        store = StateStore(db, create=True)
        if store.was_initialised:
            raise GenleakError(f"{store.url} is already a B4B state database; nothing to do")
        if cfg is not None:
            store.ensure_config(cfg)
        typer.echo(f"created B4B state database {store.url}")

    @admin.command("create")
    def admin_create(
        name: str = typer.Argument(..., help="user name (unique)"),
        db: str = typer.Option("b4b.db", "--db", help=DB_HELP),
        policy: str = typer.Option("b4b", "--policy", help="b4b (default), none (trusted: raw embeddings) or static (fixed noise)"),
        sigma: float | None = typer.Option(None, "--sigma", help="noise std for --policy static"),
        seed: int | None = typer.Option(None, "--seed", help="transformation/noise seed (default: random, secret)"),
        transforms: str | None = typer.Option(None, "--transforms", help="comma list overriding the config's, e.g. affine,pad,shuffle"),
    ) -> None:
        """Create a user and print their API key (shown once; only its hash is stored)."""
        kinds = None if transforms is None else [t.strip() for t in transforms.split(",") if t.strip()]
        user, key = _store(db).create_user(name, policy=policy, static_sigma=sigma, seed=seed, transforms=kinds)
        typer.echo(f"created user {user.name!r} (policy {user.policy})")
        typer.echo(f"API key (shown once): {key}")

    @admin.command("revoke")
    def admin_revoke(name: str = typer.Argument(...), db: str = typer.Option("b4b.db", "--db", help=DB_HELP)) -> None:
        """Revoke a user's API key; their state is kept."""
        user = _store(db).revoke_user(name)
        typer.echo(f"revoked user {user.name!r} ({user.n_queries} queries so far)")

    @admin.command("list")
    def admin_list(
        db: str = typer.Option("b4b.db", "--db", help=DB_HELP),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Every user with query count, coverage (fraction of buckets occupied) and current sigma."""
        import dataclasses
        import json

        from rich.console import Console
        from rich.table import Table

        from genleak.b4b.config import B4BConfig
        from genleak.b4b.service import user_status

        store = _store(db)
        stored = store.stored_config()
        config = stored or B4BConfig()
        statuses = [user_status(u, config) for u in store.list_users()]
        if as_json:
            typer.echo(json.dumps({"config": config.to_dict(), "config_stored": stored is not None,
                                   "users": [dataclasses.asdict(s) for s in statuses]}, indent=2))
            return
        table = Table(title=f"B4B users ({config.n_buckets} buckets, lam={config.lam:g}, alpha={config.alpha:g}, beta={config.beta:g}"
                      + ("" if stored else "; no server has used this database yet, paper defaults shown") + ")")
        for col in ("name", "policy", "status", "queries", "requests", "coverage", "sigma", "transform"):
            table.add_column(col, justify="right" if col in ("queries", "requests", "coverage", "sigma") else "left")
        for st in statuses:
            table.add_row(*_fmt_status(st))
        Console().print(table)

    @admin.command("show")
    def admin_show(name: str = typer.Argument(...), db: str = typer.Option("b4b.db", "--db", help=DB_HELP)) -> None:
        """One user's state."""
        from genleak.b4b.config import B4BConfig
        from genleak.b4b.service import user_status

        store = _store(db)
        st = user_status(store.get_user(name), store.stored_config() or B4BConfig())
        for k, v in zip(("name", "policy", "status", "queries", "requests", "coverage", "sigma", "transform"),
                        _fmt_status(st), strict=True):
            typer.echo(f"{k:>10}: {v}")

    b4b.add_typer(admin, name="admin")

    @b4b.command("calibrate")
    def b4b_calibrate(
        model: Path = typer.Option(..., "--model", help="the victim encoder folder"),
        config: Path = typer.Option(..., "--config", help="experiment file; its `calibration:` section (seed, budget, "
                                    "candidate hyperplanes) must name a world the `simulation:` section does not use"),
        out: Path | None = typer.Option(None, "--out", help="also write calibration.json here"),
        threads: int = typer.Option(1, "--threads", help="torch threads"),
    ) -> None:
        """Choose B4B's bucket count and beta from coverage on a stealer world disjoint from the simulated one."""
        import dataclasses

        import torch

        from genleak.b4b.calibrate import choose, load_calibration, measure_coverage, table
        from genleak.b4b.config import load_config
        from genleak.b4b.encoder import Encoder
        from genleak.io import atomic_write_json

        torch.set_num_threads(threads)
        cal, defense = load_calibration(config), load_config(config)
        points = measure_coverage(Encoder.load(model).embed, cal, lsh_seed=defense.lsh_seed)
        chosen = choose(points)
        typer.echo(f"calibration world seed {cal.world_seed}, {cal.budget} stealer queries, task seed {cal.task_seed}")
        typer.echo(table(points, chosen))
        if (defense.n_hyperplanes, defense.beta) != chosen:
            typer.echo(f"note: {config} uses n_hyperplanes = {defense.n_hyperplanes}, beta = {defense.beta}")
        if out is not None:
            atomic_write_json(out / "calibration.json", {"calibration": dataclasses.asdict(cal), "chosen": list(chosen),
                                                         "points": [dataclasses.asdict(p) for p in points]})

    @b4b.command("simulate")
    def b4b_simulate(
        db: str = typer.Option(..., "--db", help=DB_HELP + " (the server's; users are created there)"),
        url: str | None = typer.Option(None, "--url", help="running server, e.g. http://127.0.0.1:8000"),
        model: Path | None = typer.Option(None, "--model", help="without --url: start a server for this encoder on a free loopback port"),
        config: Path | None = typer.Option(None, "--config", help="experiment file with `defense:` and `simulation:` sections"),
        out: Path = out_option("b4b simulate", "results.json, table.md"),
        seed: int | None = typer.Option(None, "--seed", help="override simulation.seed"),
        budgets: str | None = typer.Option(None, "--budgets", help="override stealing budgets, e.g. 5000,10000"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
        threads: int | None = typer.Option(None, "--threads", help="torch threads for the stealers (default: torch's)"),
    ) -> None:
        """Run the Table 6.4.1 experiment against a B4B server: legit user, stealers, sybils, static noise."""
        from rich.console import Console

        from genleak.b4b.client import B4BClient
        from genleak.b4b.process import ServerProcess
        from genleak.b4b.simulate import load_simulation_config, run_simulation

        if threads is not None:
            import torch

            torch.set_num_threads(max(1, threads))
        console = Console(stderr=True)
        parsed = None if budgets is None else tuple(int(b) for b in budgets.split(","))
        sim = load_simulation_config(config, seed=seed, budgets=parsed)
        if url is None and model is None:
            raise GenleakError("give --url of a running server, or --model to start one")
        store = _store(db)  # a missing database fails here, before a server starts
        server = None
        if url is None:
            server = ServerProcess(model, db, config=config).start()  # type: ignore[arg-type]
            url = server.url
            console.print(f"started encoder server on {url}")
        try:
            result = run_simulation(store, lambda key: B4BClient(url, key, batch_size=sim.batch_size), sim,
                                    progress=not quiet, out_dir=out, log=console.print)
        finally:
            if server is not None:
                server.cleanup()
        typer.echo(result.table())
        typer.echo(f"\nwrote {out / 'results.json'} and {out / 'table.md'} ({result.seconds:.0f} s)")
