"""Durable AI agents: model calls and tool calls as activities, agent loops as orchestrations."""

from durable.ai._agent import Agent, AgentInput, AgentResult, AgentTool, agent_tool
from durable.ai._approval import Approval, wait_for_approval
from durable.ai._gemini import DEFAULT_GEMINI_MODEL, Gemini
from durable.ai._model import (
    DEFAULT_MODEL_RETRY,
    Model,
    ModelError,
    ModelRequestError,
    ModelUnavailableError,
    TextSink,
    activity_name,
    generate,
    model_activities,
    model_activity,
    request,
)
from durable.ai._patterns import (
    Gate,
    GateFailedError,
    Refined,
    Step,
    Vote,
    chain,
    classify,
    plan_and_run,
    refine,
    route,
    sections,
    vote,
)
from durable.ai._setup import model_limit, register
from durable.ai._tools import Tool, ToolArgumentsError, tool
from durable.ai._types import (
    Content,
    FunctionCall,
    FunctionDeclaration,
    FunctionResponse,
    ModelRequest,
    ModelResponse,
    Part,
    Usage,
    model,
    user,
)
from durable.ai._workflow import LoopAgent, ParallelAgent, SequentialAgent

__all__ = [
    # agents
    "Agent",
    "AgentInput",
    "AgentResult",
    "Approval",
    "AgentTool",
    "agent_tool",
    "SequentialAgent",
    "ParallelAgent",
    "LoopAgent",
    # patterns
    "chain",
    "Step",
    "Gate",
    "GateFailedError",
    "classify",
    "route",
    "sections",
    "vote",
    "Vote",
    "plan_and_run",
    "refine",
    "Refined",
    "wait_for_approval",
    # tools
    "Tool",
    "tool",
    "ToolArgumentsError",
    # set-up
    "register",
    "model_limit",
    # models
    "Model",
    "Gemini",
    "DEFAULT_GEMINI_MODEL",
    "TextSink",
    "generate",
    "request",
    "model_activity",
    "model_activities",
    "activity_name",
    "DEFAULT_MODEL_RETRY",
    "ModelError",
    "ModelUnavailableError",
    "ModelRequestError",
    # the conversation
    "Content",
    "Part",
    "FunctionCall",
    "FunctionResponse",
    "FunctionDeclaration",
    "ModelRequest",
    "ModelResponse",
    "Usage",
    "user",
    "model",
]
