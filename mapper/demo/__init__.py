"""The demo region's generator. Every output is SYNTHETIC: made offline and deterministically
from one seed, it describes no real place.

- :mod:`mapper.demo.sources`: the entry, :func:`~mapper.demo.sources.synthesize_demo`, writing
  the region's sources, truth and manifest;
- :mod:`mapper.demo.world`: one world (land cover, climate, truth) on a 10 m lattice-aligned
  grid, over :mod:`mapper.demo.terrain` (uplands carved by :mod:`mapper.demo.creeks`);
- :mod:`mapper.demo.fields`: the world's grid, layout and seeded random fields;
- :mod:`mapper.demo.grids`: the sources' native grids; :mod:`mapper.demo.render`: the world
  sampled on them;
- :mod:`mapper.demo.survey`: field observations drawn from the truth;
- :mod:`mapper.demo.zones`: the zone layer of the results by zone (summer-warmth classes of the
  synthetic climate), a file of its own made after the sources.
"""
