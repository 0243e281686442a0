"""What operators do to the stored state: read and erase profiles, recover after lost state."""
