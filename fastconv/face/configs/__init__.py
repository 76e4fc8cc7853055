"""Training presets (TOML) for ``fastconv face train --config NAME``."""
