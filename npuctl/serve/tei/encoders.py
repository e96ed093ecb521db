"""TEI's `/embed` (a list of vectors) and `/predict` (labels with scores), with the fields huggingface_hub's
`feature_extraction` and `text_classification` send (npuctl/serve/tei/requests.py); a field that cannot be honoured
is a 400 naming it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from npuctl.schema.models import Api, Task
from npuctl.serve import embedding
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.fastjson import FastJSONResponse
from npuctl.serve.models import EmbeddingService, ScoringService
from npuctl.serve.scoring.classify import classified
from npuctl.serve.tei.requests import PredictParameters, TeiEmbedRequest, TeiPredictRequest


async def embed(request: Request, ctx: ServeContext, asked: TeiEmbedRequest, name: str) -> Response:
    with ctx.using(request, name, Api.OPENAI, EmbeddingService) as model:
        normalized = model.model.pooling.normalize
        if asked.normalize != normalized:
            raise ApiError(400, f"this deployment's embeddings are {'' if normalized else 'not '}normalized "
                           "(spec.model.normalize): send normalize: " + str(normalized).lower(), param="normalize")
        # TEI's default is to refuse a long input (truncate: false); the deployment's own default here.
        truncate = model.truncate if asked.truncate is None else asked.truncate
        done = await embedding.embed(request, model, asked.inputs, truncate=truncate, dimensions=asked.dimensions,
                                     param="inputs")
        return FastJSONResponse([embedding.floats(vector) for vector in done.vectors])


async def predict(request: Request, ctx: ServeContext, asked: TeiPredictRequest, name: str) -> Response:
    parameters = asked.parameters or PredictParameters()
    function = parameters.function_to_apply
    raw = asked.raw_scores or function == "none"
    items = [asked.inputs] if isinstance(asked.inputs, str) else asked.inputs
    with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
        if model.task is not Task.CLASSIFICATION:
            raise ApiError(404, f"the model {name!r} is not a classifier", param="model")
        head = model.model.head
        if function not in (None, "none", "softmax" if not head.multi_label else "sigmoid"):
            raise ApiError(400, f"'parameters.function_to_apply' {function!r}: this model's scores are "
                           f"{'sigmoid' if head.multi_label else 'softmax'} (or none: raw logits)",
                           param="parameters.function_to_apply")
        scores, _ = await classified(request, model, items, asked.truncate, "inputs", raw=raw)
        answers = [labels[:parameters.top_k] for labels in scores]
        return JSONResponse(answers)  # a list per input, a single input too (as the Inference API answers)
