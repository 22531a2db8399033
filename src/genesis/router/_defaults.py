"""The six default agent cards (to move into YAML configuration later).

Examples are typical phrasings written for the cards; they are deliberately not the
labelled benchmark tasks (``tests/router/labelled_tasks.jsonl``).
"""

from __future__ import annotations

from genesis.router._types import AgentCard

SUPPORT = AgentCard(
    name="support",
    description=(
        "Customer support for account holders: signing in, passwords, two-factor "
        "authentication, billing, charges, refunds, subscriptions and plans, invoices "
        "received, API keys that stopped working, and troubleshooting problems with the service."
    ),
    keywords=[
        "refund",
        "refunds",
        "reset my password",
        "forgot my password",
        "locked out",
        "two-factor",
        "2fa",
        "charged twice",
        "overcharged",
        "cancel my subscription",
        "downgrade",
        "billing",
        "payment failed",
        "my credit card",
        "customer support",
    ],
    patterns=[
        r"\b(i|we)\s+(can't|cannot|can not|am unable to|are unable to)\s+(log|sign)\s*in\b",
        r"\bmy\s+(account|subscription|plan|bill|invoice|card|api key)\b",
        r"\b(isn't|is not|stopped|doesn't|does not)\s+work(ing)?\b",
    ],
    examples=[
        "I can't log into my account anymore",
        "Why was I charged twice this month?",
        "How do I get a refund for my last payment?",
        "My API key suddenly returns unauthorized",
        "Please help me change my plan to the cheaper one",
        "I lost my phone and can't get the two-factor code",
        "Where can I download my invoices?",
        "The dashboard keeps showing an error when I open it",
        "How do I update the card on file?",
        "Can I change the currency I am billed in?",
    ],
)

DOCUMENTATION = AgentCard(
    name="documentation",
    description=(
        "Product and API documentation: endpoints, request and response fields, "
        "authentication headers, pagination, webhooks, idempotency keys, errors and status "
        "codes, SDK usage, versioning, regions, and quickstart guides for developers."
    ),
    keywords=[
        "endpoint",
        "endpoints",
        "sdk",
        "pagination",
        "paginate",
        "webhook",
        "webhooks",
        "idempotency",
        "idempotency key",
        "api reference",
        "status code",
        "query parameter",
        "request body",
        "response schema",
        "quickstart",
        "changelog",
    ],
    patterns=[
        r"\bhow\s+do\s+i\s+(call|use|authenticate\s+with)\s+the\b.*\bapi\b",
        r"\bwhat\s+does\s+the\b.*\b(field|parameter|header|error|endpoint)\b.*\bmean\b",
        r"\b(GET|POST|PUT|PATCH|DELETE)\s+/\w+",
        r"\bdocs?\s+(for|on|about)\b",
    ],
    examples=[
        "Which fields does the create customer endpoint accept?",
        "How does cursor-based pagination work in the list calls?",
        "What headers are needed to authenticate API requests?",
        "How do I verify the signature of a webhook event?",
        "Show an example of creating a payment with the Python SDK",
        "What does a 409 error response mean?",
        "How are API versions pinned and what changed in the latest one?",
        "Where is customer data stored for EU accounts?",
        "Explain how retries with idempotency keys behave",
        "Getting started guide for sending the first request",
    ],
)

BUSINESS_GENERATION = AgentCard(
    name="business_generation",
    description=(
        "Business generation: new business ideas, one-page business plans, lean canvas, "
        "market sizing, pricing strategy, revenue models, target customers, competitors and "
        "go-to-market plans for founders and small companies."
    ),
    keywords=[
        "business plan",
        "business idea",
        "business ideas",
        "go-to-market",
        "go to market",
        "lean canvas",
        "market size",
        "market sizing",
        "tam",
        "pricing strategy",
        "revenue model",
        "startup",
        "side hustle",
        "monetize",
        "investors",
        "pitch deck",
    ],
    patterns=[
        r"\b(start|launch|open|run)\s+(a|an|my|our)\s+(\w+\s+)?(business|company|startup|shop|agency)\b",
        r"\bhow\s+(should|do)\s+(i|we)\s+price\b",
    ],
    examples=[
        "Give me ideas for a service business I could run from home",
        "Draft a one-page plan for a mobile coffee cart",
        "How big is the market for pet grooming in a mid-sized city?",
        "What should I charge for a monthly bookkeeping package?",
        "Fill in a lean canvas for a language tutoring marketplace",
        "Plan the launch of a new subscription box",
        "Who are the likely customers and competitors for a bike repair van?",
        "Suggest a revenue model for a free mobile app",
        "Outline a go-to-market checklist for a B2B SaaS tool",
    ],
)

QA = AgentCard(
    name="qa",
    description=(
        "Quality assurance: writes automated tests for given code — unit tests, "
        "integration tests, pytest test cases, edge cases, fixtures, mocks and test plans "
        "that check a function or module behaves as specified."
    ),
    keywords=[
        "unit test",
        "unit tests",
        "test cases",
        "test case",
        "pytest",
        "test coverage",
        "edge cases",
        "test plan",
        "integration tests",
        "fixtures",
        "unittest",
    ],
    patterns=[
        r"\b(write|generate|add|create|need|want)\s+(some\s+|more\s+)?(unit\s+|integration\s+)?tests?\b",
        r"\btests?\s+for\s+(this|the|my)\b",
    ],
    examples=[
        "Write tests for this parsing function",
        "Cover this class with pytest cases including the error paths",
        "Which edge cases should a date parser be checked against?",
        "Add tests that prove the cache evicts the oldest entry",
        "Create a test plan for the checkout flow",
        "Generate parametrized tests for a slugify helper",
        "I need regression tests for the bug we fixed in the tokenizer",
        "Make sure this function handles empty input, with assertions",
    ],
)

CODE_REVIEW = AgentCard(
    name="code_review",
    description=(
        "Code review: reads a given diff, pull request or source file and returns findings "
        "— bugs, security issues, race conditions, style, naming, readability, error "
        "handling and suggested changes before merging."
    ),
    keywords=[
        "code review",
        "review",
        "pull request",
        "diff",
        "pr",
        "lgtm",
        "code smell",
        "security issue",
        "before merging",
    ],
    patterns=[
        r"\breview\s+(this|my|the|our)\b",
        r"^\s*diff\s+--git\b",
        r"^@@\s+-\d+",
        r"\bany\s+(bugs|issues|problems)\s+(in|with)\s+(this|my|the)\b",
    ],
    examples=[
        "Please review this pull request before I merge it",
        "Look over this diff and point out any bugs",
        "Is this function safe against SQL injection?",
        "Give feedback on the naming and structure of this module",
        "Does this change introduce a race condition?",
        "What would you change in this code before merging?",
        "Check this patch for error handling problems",
        "Critique my implementation of the retry logic",
    ],
)

SE_DARWIN = AgentCard(
    name="se_darwin",
    description=(
        "SE-Darwin, self-improving code evolution: takes a function and its tests, proposes "
        "many variants with an LLM, runs the tests on each in a sandbox, and keeps the best — "
        "making slow or failing code pass its tests and run faster."
    ),
    keywords=[
        "evolve",
        "evolutionary",
        "genetic",
        "mutate",
        "mutations",
        "variants",
        "se-darwin",
        "darwin",
        "self-improve",
        "self-improving",
        "speed up",
        "faster",
    ],
    patterns=[
        r"\b(make|get)\s+(this|it|the\s+\w+)\s+(\w+\s+)?(faster|pass)\b",
        r"\b(optimi[sz]e|improve)\s+(the\s+)?(performance|speed|runtime|running time)\b",
        r"\biterate\s+(on|over)\s+.*\buntil\b.*\bpass",
    ],
    examples=[
        "Evolve this function until all its tests pass",
        "Make this sorting routine faster without breaking the tests",
        "Try several rewrites of this function and keep the quickest",
        "This solver is too slow; search for a better implementation",
        "Automatically repair this failing function using its test suite",
        "Generate candidate versions of this code and benchmark them",
        "Improve the runtime of this algorithm while keeping it correct",
        "Run an evolutionary search over implementations of this parser",
    ],
)

DEFAULT_AGENT_CARDS: tuple[AgentCard, ...] = (
    SUPPORT,
    DOCUMENTATION,
    BUSINESS_GENERATION,
    QA,
    CODE_REVIEW,
    SE_DARWIN,
)
