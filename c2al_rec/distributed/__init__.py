"""Everything about process groups, sharding and DMP. ``c2al_rec.modules`` never imports this."""
