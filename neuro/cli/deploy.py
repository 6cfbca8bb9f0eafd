"""``neuro deploy``: quantize a trained run for Loihi 2, run it on Lava, compare with the float model."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "deploy",
        help="deploy a trained run to Loihi (Lava fixed_pt simulation)",
        description="Quantize runs/<name> to Loihi 2 fixed point, run test samples on the bit-accurate twin and on "
        "Lava (Loihi2SimCfg fixed_pt, or Loihi 2 hardware when lava-loihi is installed), and report float "
        "vs twin vs Lava accuracy and spike agreement (written to <run>/deploy-loihi/<target>/, or "
        "<run>/deploy-loihi/twin/ with --twin-only, so earlier results are kept).",
    )
    from neuro.registry import DEPLOY_TARGETS

    p.add_argument(
        "run", help="run directory, e.g. runs/digits-loihi (made by `neuro train examples/digits_loihi.toml`)"
    )
    p.add_argument(
        "--target", default="loihi-sim", choices=DEPLOY_TARGETS.names(), help="deployment target (default loihi-sim)"
    )
    p.add_argument("--samples", type=int, default=100, help="test samples to run (default 100; all in one Lava run)")
    p.add_argument(
        "--clip-percentile",
        type=float,
        default=100.0,
        help="percentile of |W| that maps to the largest mantissa (default 100: max)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the input spike encoding (default 0)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="time limit of the Lava run in seconds (default: 60 s + 10 ms per step)",
    )
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=0,
        help="quantization-aware fine-tuning epochs on the twin before deploying (default 0)",
    )
    p.add_argument("--qat-lr", type=float, default=1e-4, help="learning rate of the fine-tuning (default 1e-4)")
    p.add_argument("--twin-only", action="store_true", help="stop after the fixed-point twin (no Lava run)")
    p.set_defaults(func=run)


def run(args) -> int:
    from devices.lava_backend import check_timeout
    from neuro.deploy import deploy_loihi

    if args.timeout is not None:
        check_timeout(args.timeout, "--timeout")
    deploy_loihi(
        args.run,
        target=args.target,
        samples=args.samples,
        clip_percentile=args.clip_percentile,
        seed=args.seed,
        timeout_s=args.timeout,
        lava=not args.twin_only,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
    )
    return 0
