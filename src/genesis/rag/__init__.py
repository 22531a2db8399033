"""The token-cached RAG core: retrieve -> tokens -> assemble (token space) -> generate."""

from genesis.rag._answerability import PACKAGED_MODEL as PACKAGED_ANSWERABILITY
from genesis.rag._answerability import AnswerabilityModel
from genesis.rag._assembly import (
    AssembledPrompt,
    IncludedChunk,
    PromptAssembler,
    PromptSegment,
    PromptTemplate,
)
from genesis.rag._evidence import (
    AbstentionPolicy,
    Assessment,
    Evidence,
    EvidenceScorer,
    Vocabulary,
    vocabulary,
)
from genesis.rag._history import Turn, turns_from_messages
from genesis.rag._pipeline import (
    NOT_ANSWERED,
    Generate,
    RAGAnswer,
    RAGUsage,
    Source,
    TokenCachedRAG,
    may_win,
    renumber_citations,
)

__all__ = [
    "AbstentionPolicy",
    "AnswerabilityModel",
    "PACKAGED_ANSWERABILITY",
    "AssembledPrompt",
    "Assessment",
    "Evidence",
    "EvidenceScorer",
    "Generate",
    "IncludedChunk",
    "NOT_ANSWERED",
    "PromptAssembler",
    "PromptSegment",
    "PromptTemplate",
    "RAGAnswer",
    "RAGUsage",
    "Source",
    "TokenCachedRAG",
    "Turn",
    "Vocabulary",
    "may_win",
    "renumber_citations",
    "turns_from_messages",
    "vocabulary",
]
