"""Images to features and what the app builds from them: the data source and the model cache, then feature
banks, their UMAP maps and the neighbour index behind Explore, and the Train tab's live map, the heavy parts in
low-priority child processes (children.py; run as `python -m services.features.<module>`).

May import vicreg and nothing else of services: the rest of services/ (the Studio facade, reports, training)
builds on this folder, never the other way round.
"""
