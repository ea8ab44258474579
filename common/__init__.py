"""Pure helpers shared by every app (no Django import)."""
