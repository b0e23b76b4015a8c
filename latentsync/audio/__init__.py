"""Audio path: decode to 16 kHz mono, Whisper log-mel, encoder features, per-frame windows.

Submodules (imported on demand so that importing this package stays cheap):

- `decode`: `load_audio(path, sample_rate=16000)` with PyAV.
- `mel`: `mel_filter_bank()`, `log_mel_spectrogram(waveform)` (Whisper's front end).
- `features`: `audio_features(waveform, encoder)`, `iter_audio_features(...)`,
  `frame_audio_windows(features, frame_indices)`,
  `frame_audio_windows_at_times(features, frame_times_s)`, `audio_frame_count(n_steps, fps)`.

The encoder itself is `latentsync.models.whisper_encoder`.
"""
