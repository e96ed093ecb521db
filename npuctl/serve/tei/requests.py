"""The TEI (`/embed`, `/predict`) and TGI (`/generate`, `/generate_stream`) request bodies as models, with the
fields huggingface_hub's InferenceClient sends: what the server validates and what /openapi.json shows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from npuctl.serve.http.limits import MAX_ROWS
from npuctl.serve.http.validation import Body

Text = Annotated[str, Field(pattern=r"\S")]
Inputs = Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_ROWS)]
ModelName = Annotated[str, Field(min_length=1)]
Refused = Literal[False] | None
"""A field that cannot be honoured: null or false only (what clients send for "not set")."""
Direction = Literal["right", "Right"]
"""Only the end of a too-long input is cut."""


class _Tei(Body):
    model: ModelName | None = None
    """Optional when one model of the kind serves (TEI's and TGI's clients send none)."""
    inputs: Inputs
    """A text, or texts."""
    truncate: bool | None = None
    """Cut an input at the model's limit, or refuse it; unset: the deployment's spec.serve.truncate."""
    truncation_direction: Direction = "right"


class TeiEmbedRequest(_Tei):
    normalize: bool = True
    """Must match the deployment's spec.model.normalize (its vectors are made one way)."""
    dimensions: int | None = None
    """Must be the model's own: its vectors cannot be shortened."""
    encoding_format: Literal["float"] = "float"
    """base64 is OpenAI's route's (POST /v1/embeddings)."""
    prompt_name: Refused = None
    """Sentence-transformers' named prompts are not kept: send the prompt in `inputs`."""


class PredictParameters(Body):
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None
    """The model's own (softmax, or sigmoid for a multi-label model), or none: raw logits."""
    top_k: Annotated[int, Field(ge=1)] | None = None
    """The most likely labels only."""


class TeiPredictRequest(_Tei):
    raw_scores: bool = False
    """Logits instead of probabilities."""
    parameters: PredictParameters | None = None


class GenerateParameters(Body):
    max_new_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    seed: Annotated[int, Field(ge=0)] | None = None
    do_sample: bool | None = None
    """Sample (else greedy unless a temperature, top_k, top_p or typical_p is given, as TGI does)."""
    details: bool | None = None
    """The finish reason, token count and seed with the text."""
    return_full_text: bool | None = None
    """The prompt before the generated text."""
    repetition_penalty: Annotated[float, Field(ge=0.01, le=10)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    typical_p: Annotated[float, Field(gt=0, le=1)] | None = None
    """Typical sampling: keep the tokens whose surprise is closest to the distribution's entropy, up to this
    probability mass (1: off). Asking for it samples, as TGI does."""
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None
    # TGI's parameters npuctl cannot honour: null or false only (what clients send for "not set").
    adapter_id: Refused = None
    """Adapters are not loaded."""
    best_of: Refused = None
    """One sequence is generated."""
    decoder_input_details: Refused = None
    """The prompt's log probabilities are not computed."""
    grammar: Refused = None
    """Use the OpenAI API's response_format."""
    top_n_tokens: Refused = None
    """Use the OpenAI API's logprobs."""
    watermark: Refused = None
    """Answers are not watermarked."""
    truncate: Refused = None
    """A prompt too long for the context is a 400, never cut."""


class GenerateRequest(Body):
    model: ModelName | None = None
    """Optional when one text-generation model serves (TGI's clients send none)."""
    inputs: Annotated[str, Field(min_length=1)]
    """The prompt, as it is (no chat template)."""
    parameters: GenerateParameters | None = None
    stream: bool = False
    """At the root (`POST /`): answer as /generate_stream does."""
