"""The token-cached RAG core: retrieve -> tokens -> assemble (token space) -> generate."""

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
from genesis.rag._pipeline import (
    NOT_ANSWERED,
    RAGAnswer,
    RAGUsage,
    Source,
    TokenCachedRAG,
    renumber_citations,
)

__all__ = [
    "NOT_ANSWERED",
    "AbstentionPolicy",
    "AssembledPrompt",
    "Assessment",
    "Evidence",
    "EvidenceScorer",
    "IncludedChunk",
    "PromptAssembler",
    "PromptSegment",
    "PromptTemplate",
    "RAGAnswer",
    "RAGUsage",
    "Source",
    "TokenCachedRAG",
    "Vocabulary",
    "renumber_citations",
    "vocabulary",
]
