"""StreamQL's examples, shipped inside the wheel as `streamql.examples` so that `streamql demo`
finds its model bundle in an installed copy too."""
