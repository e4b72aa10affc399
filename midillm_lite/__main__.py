"""`python -m midillm_lite` and the `midillm-lite` console script: run the CLI, a Ctrl-C at start-up included."""


def run() -> None:
    from .errors import EXIT_INTERRUPTED

    try:
        from .cli import main
    except KeyboardInterrupt:  # Ctrl-C while Python is still importing: an interruption, not a traceback
        import sys

        if sys.stderr is not None:  # said, as every other interruption is (it exited 130 without a word)
            print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    main()


if __name__ == "__main__":
    run()
