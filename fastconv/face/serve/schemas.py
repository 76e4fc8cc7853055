"""Typed request and response bodies of the ``/api/v1`` routes (pydantic; they make the OpenAPI docs)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field


class Box(BaseModel):
    """Face box in pixels of the EXIF-oriented upload (the whole image when detection is off)."""

    x: int
    y: int
    w: int
    h: int


class Face(BaseModel):
    box: Box
    detected: bool = Field(description="false when the image was taken as an LFW-style crop (no-detect)")
    crop: Optional[str] = Field(None, description="the 250x250 LFW-style crop as a JPEG data URL (crops=true)")


class ModelInfo(BaseModel):
    model: str = Field(description="model id: name and a digest of the weights")
    engine: Literal["torch", "fastconv"]


Scorer = Literal["cosine", "plda"]
ThresholdKind = Literal["cosine", "log-likelihood ratio"]


class Scoring(BaseModel):
    scorer: Scorer = Field(description="cosine of the embeddings, or the model's PLDA back-end")
    threshold: float = Field(description="same person when the score reaches it, on the scorer's scale")
    threshold_kind: ThresholdKind = Field(description="'cosine' (in [-1, 1]) or 'log-likelihood ratio' (natural "
                                                      "log of p(same) / p(different), 0 = equal evidence)")


class VerifyResponse(ModelInfo, Scoring):
    verified: bool = Field(description="similarity >= threshold")
    similarity: float = Field(description="the scorer's score of the two faces: a cosine in [-1, 1], or the PLDA "
                                          "log-likelihood ratio (threshold_kind)")
    faces: list[Face]
    time_ms: float


class RepresentResponse(ModelInfo):
    embedding: list[float] = Field(description="L2-normalised embedding, D floats")
    box: Box
    detected: bool
    time_ms: float


class SubjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class Subject(BaseModel):
    name: str
    n_faces: int
    created: float = Field(description="Unix time")


class SubjectList(BaseModel):
    subjects: list[Subject]
    n_faces: int


class SubjectDeleted(BaseModel):
    deleted: str
    faces_deleted: int


class FaceAdded(BaseModel):
    face_id: int
    subject: str
    box: Box
    detected: bool
    image_sha256: str
    crop: Optional[str] = None


class FaceDeleted(BaseModel):
    deleted: int


class Match(BaseModel):
    subject: str
    similarity: float = Field(description="the scorer's score of the probe and this face (cosine or log-likelihood ratio)")
    face_id: int
    accepted: bool = Field(description="similarity >= threshold")


class IdentifyResponse(ModelInfo, Scoring):
    results: list[Match] = Field(description="best face of each of the top_k most similar subjects")
    accepted: bool = Field(description="the best match reaches the threshold")
    subject: Optional[str] = Field(None, description="the best match when accepted, else null")
    gallery_faces: int
    face: Face
    time_ms: float


class GalleryInfo(BaseModel):
    path: str
    subjects: int
    faces: int
    search: str = Field(description="'exact', or the approximate index in use")


class Health(ModelInfo, Scoring):
    status: Literal["ok"] = "ok"
    threshold_source: str
    embedding_size: int
    input_size: int
    detect: bool = Field(description="default for requests that do not say")
    max_image_bytes: int
    gallery: GalleryInfo


class ErrorBody(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    error: ErrorBody
