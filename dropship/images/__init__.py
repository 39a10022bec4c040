"""Product images: fetched from suppliers, checked, normalised per consumer, stored by content
hash and handed to each market the way it accepts them (docs/ARCHITECTURE.md "Images")."""
