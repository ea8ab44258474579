"""The HelpSteer meaning of each score, shown to annotators on hover (as in prompt v1)."""

GUIDE: dict[str, dict[int, str]] = {
    "helpfulness": {
        4: "fully serves the intent of the question",
        3: "mostly helpful; misses a small part",
        2: "partly helpful; misses part of the goal",
        1: "barely helpful",
        0: "misses the point entirely",
    },
    "correctness": {
        4: "accurate and complete; nothing invented about the image",
        3: "minor omissions, nothing false",
        2: "a mix of correct and incorrect",
        1: "mostly wrong, or describes things not in the image",
        0: "entirely wrong, or no attempt",
    },
    "coherence": {
        4: "perfectly clear and consistent",
        3: "one or two unclear spots",
        2: "some contradictions or hard parts",
        1: "mostly hard to follow",
        0: "incomprehensible",
    },
    "complexity": {
        0: "a young child could follow it",
        1: "simple language",
        2: "high-school language",
        3: "college-level language in the field",
        4: "expert language",
    },
    "verbosity": {
        0: "minimal: the bare answer",
        1: "short",
        2: "average for the question",
        3: "moderately long",
        4: "verbose",
    },
}
