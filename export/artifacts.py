def export_checkpoint(path):
    raise NotImplementedError  # placeholder until the export work lands
