"""The Anticipatory Music Transformer's arrival-time vocabulary and the codec between its tokens and MIDI.

- `vocab`: the token layout (the one place its numbers live); `ops`: what kind of token an id is,
  and notes <-> instrument/pitch, next to it as in AMT's own `ops.py`.
- `codec`: tokens <-> notes (pure, with counted repairs); `midi`: notes <-> MIDI files (mido);
  `gm`: General MIDI names and families; `tokens_file`: the one-id-per-line token files;
  `transcode`: the file-level encode/decode the CLI runs; `continuation`: the window `gen --continue` continues.
"""
