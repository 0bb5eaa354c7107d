"""ElevenLabs realtime speech-to-text (Scribe realtime WebSocket) behind the ``SttEngine`` protocol.

The protocol subset, its sources and how we map it are in ``docs/elevenlabs-realtime-protocol.md``.
In short: one WebSocket session per participant stream (``xi-api-key`` header) with
``commit_strategy=vad``, ``include_timestamps=true`` and the domain ``keyterms`` (one repeated query
parameter per term), every parameter checked against its documented range first; base64 PCM goes up
in ``input_audio_chunk`` messages with all four documented fields; partials come back as
``partial_transcript`` (or ``final_transcript``: settled, not committed) and each commit as
``committed_transcript`` followed by its twin ``committed_transcript_with_timestamps``, which we pair
into exactly one final. Every server message is validated against its documented schema; what fails
is logged and counted, never fatal, and unknown types are ignored. An utterance that runs past
``max_utterance_s`` gets a manual commit at its quietest recent moment; manual commits keep the
service's rules (0.3 s of uncommitted audio, not several in a short time), and ``commit_throttled``
only means that commit was ignored.

- ``options``: the tunables and the session URL.
- ``messages``: the wire messages, built and parsed, and what the server's kinds of error mean.
- ``loudness``: a 100 ms loud/quiet map of the pushed audio (where speech may be, without a server).
- ``keyterms``: the vocabulary sent as keyterms, checked against the documented limits.
- ``ledger``: the audio a stream holds, what the current session has been sent and what commits cover.
- ``bounds``: where an over-long utterance gets a manual commit, and matching our commits to answers.
- ``twins``: pairing each plain commit with its timestamped twin.
- ``connection``: opening and closing the WebSocket, the session outcomes, the key kept out of logs.
- ``session``: one WebSocket session (sender, receiver, deadlines), to an outcome.
- ``stream``: ``ElevenLabsStream``, the ``SttStream``, and its reconnect loop.
- ``engine``: ``ElevenLabsEngine``, the ``SttEngine``.
"""
