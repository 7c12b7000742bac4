"""Identity scoring: how much candidate images show the subject of reference images (docs/identity.md).

``scorer_by_name(name)`` gives an ``IdentityScorer``; ``scorer.score(references, candidates)`` returns
``IdentityScores`` (per candidate: score 0..1, best, passed, or unscorable with a reason; overall; passed;
failing). Scorers: ``appearance`` (default: colour and structure of the picture's centre, no model weights)
and ``face`` (dlib face embeddings, ``pip install 'reelforge[identity]'``). Errors: ``IdentityError`` and below.
"""

from reelforge.identity.appearance import Appearance, AppearanceScorer, appearance_of, appearance_similarity
from reelforge.identity.base import IdentityScorer, score_embeddings
from reelforge.identity.errors import (
    IdentityError,
    IdentityInputError,
    NoUsableReference,
    ScorerUnavailable,
    UnknownScorer,
)
from reelforge.identity.face import FaceScorer, face_similarity
from reelforge.identity.registry import DEFAULT_SCORER, SCORERS, scorer_by_name
from reelforge.identity.scores import CandidateScore, Embedded, IdentityScores, ReferenceStatus, build_scores
from reelforge.identity.stage import identity_stage

__all__ = [
    "DEFAULT_SCORER",
    "SCORERS",
    "Appearance",
    "AppearanceScorer",
    "CandidateScore",
    "Embedded",
    "FaceScorer",
    "IdentityError",
    "IdentityInputError",
    "IdentityScorer",
    "IdentityScores",
    "NoUsableReference",
    "ReferenceStatus",
    "ScorerUnavailable",
    "UnknownScorer",
    "appearance_of",
    "appearance_similarity",
    "build_scores",
    "face_similarity",
    "identity_stage",
    "score_embeddings",
    "scorer_by_name",
]
