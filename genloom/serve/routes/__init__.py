"""The HTTP routes, one module per resource; thin: parse the request, call the library, shape the answer."""

from genloom.serve.routes import (
    completions,
    embeddings,
    files,
    fine_tuning,
    health,
    history,
    images,
    models,
    moderations,
    music,
    provenance,
    speech,
    transcriptions,
    vector_stores,
    watermarks,
)

ROUTERS = [health.router, models.router, completions.router, images.router, files.router, fine_tuning.router,
           embeddings.router, moderations.router, history.router, vector_stores.router,
           music.router, speech.router, transcriptions.router, provenance.router, watermarks.router]
