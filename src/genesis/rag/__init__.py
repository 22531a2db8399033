"""The token-cached RAG core: retrieve -> tokens -> assemble (token space) -> generate."""

from genesis.rag._assembly import (
    AssembledPrompt,
    IncludedChunk,
    PromptAssembler,
    PromptSegment,
    PromptTemplate,
)
from genesis.rag._history import Turn, turns_from_messages
from genesis.rag._pipeline import Generate, RAGAnswer, RAGUsage, Source, TokenCachedRAG

__all__ = [
    "AssembledPrompt",
    "Generate",
    "IncludedChunk",
    "PromptAssembler",
    "PromptSegment",
    "PromptTemplate",
    "RAGAnswer",
    "RAGUsage",
    "Source",
    "TokenCachedRAG",
    "Turn",
    "turns_from_messages",
]
