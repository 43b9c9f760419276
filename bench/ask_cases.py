"""The ask bench's requests (``bench/ask.py``), written for it: varied wording, some ambiguous, some
naming things that do not exist, some sent with a key that may not do them. Each gives the role whose
key sends it and the outcome expected: a plan (``[operation, arguments]`` per step), ``"question"`` or
``"refused"``. ``{job1}``, ``{job2}``, ``{dir}`` and ``{file1}`` are filled in from the bench's world."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Expected = str | list[list[Any]]


@dataclass(frozen=True)
class Case:
    text: str
    key: str  # admin | reader | trainer: the role whose key sends the request
    expect: Expected


CASES: tuple[Case, ...] = (
    Case('list my models', 'admin', [['list_models', {}]]),
    Case('which models can I use?', 'admin', [['list_models', {}]]),
    Case('show me every model in the store', 'admin', [['list_models', {}]]),
    Case('what models do we have', 'admin', [['list_models', {}]]),
    Case('what is loaded in memory right now', 'admin', [['ps', {}]]),
    Case('show memory usage', 'admin', [['ps', {}]]),
    Case('ps', 'admin', [['ps', {}]]),
    Case('which models are currently loaded?', 'admin', [['ps', {}]]),
    Case('load smollm2', 'admin', [['load_model', {'model': 'smollm2-135m-instruct'}]]),
    Case('warm up the chat model', 'admin', 'question'),
    Case('please load minilm-l6 into memory', 'admin', [['load_model', {'model': 'minilm-l6'}]]),
    Case('preload the support-bot model', 'admin', [['load_model', {'model': 'support-bot'}]]),
    Case('unload smollm2', 'admin', [['unload_model', {'model': 'smollm2-135m-instruct'}]]),
    Case('free the memory used by minilm-l6', 'admin', [['unload_model', {'model': 'minilm-l6'}]]),
    Case('evict support-bot from memory', 'admin', [['unload_model', {'model': 'support-bot'}]]),
    Case('unload smollm2 and minilm-l6', 'admin', [['unload_model', {'model': 'smollm2-135m-instruct'}], ['unload_model', {'model': 'minilm-l6'}]]),
    Case('take smollm2-135m-instruct out of memory', 'admin', [['unload_model', {'model': 'smollm2-135m-instruct'}]]),
    Case('list my jobs', 'admin', [['list_jobs', {}]]),
    Case('what jobs are running?', 'admin', [['list_jobs', {}]]),
    Case('show the status of my training jobs', 'admin', [['list_jobs', {}]]),
    Case('pause {job1}', 'admin', [['pause_job', {'job': '{job1}'}]]),
    Case('resume {job1}', 'admin', [['resume_job', {'job': '{job1}'}]]),
    Case('cancel {job2}', 'admin', [['cancel_job', {'job': '{job2}'}]]),
    Case('abort the latest job', 'admin', [['cancel_job', {'job': '{job2}'}]]),
    Case('put {job1} on hold', 'admin', [['pause_job', {'job': '{job1}'}]]),
    Case('list my datasets', 'admin', [['list_datasets', {}]]),
    Case('which datasets have I imported?', 'admin', [['list_datasets', {}]]),
    Case('fine-tune smollm2 on intents', 'admin', [['train', {'model': 'smollm2-135m-instruct', 'dataset': 'intents'}]]),
    Case('train minilm-l6 on the reviews dataset', 'admin', [['train', {'model': 'minilm-l6', 'dataset': 'reviews'}]]),
    Case('start a lora fine-tune of smollm2 with intents', 'admin', [['train', {'model': 'smollm2-135m-instruct', 'dataset': 'intents', 'method': 'lora'}]]),
    Case('retrain support-bot on reviews', 'admin', [['train', {'model': 'support-bot', 'dataset': 'reviews'}]]),
    Case('tune the hyperparameters of minilm-l6 on reviews', 'admin', [['tune', {'model': 'minilm-l6', 'dataset': 'reviews'}]]),
    Case('run a hyperparameter search for minilm-l6 on intents with 12 trials', 'admin', [['tune', {'model': 'minilm-l6', 'dataset': 'intents', 'trials': 12}]]),
    Case('find the best learning rate for smollm2 on intents', 'admin', [['tune', {'model': 'smollm2-135m-instruct', 'dataset': 'intents'}]]),
    Case('list the loop policies', 'admin', [['list_loops', {}]]),
    Case('which models retrain themselves from feedback?', 'admin', [['list_loops', {}]]),
    Case('set up the feedback loop for support-bot and canary it on 10% of traffic', 'admin', [['set_loop', {'model': 'support-bot', 'canary_share': 0.1}]]),
    Case('turn on automatic retraining from corrections for support-bot', 'admin', [['set_loop', {'model': 'support-bot'}]]),
    Case('roll back support-bot', 'admin', [['rollback', {'model': 'support-bot'}]]),
    Case('revert support-bot to the previous version', 'admin', [['rollback', {'model': 'support-bot'}]]),
    Case('list my knowledge bases', 'admin', [['list_kbs', {}]]),
    Case('which knowledge bases exist?', 'admin', [['list_kbs', {}]]),
    Case('search the faq knowledge base for card delivery', 'admin', [['search_kb', {'kb': 'faq', 'query': 'card delivery'}]]),
    Case('look up refunds in faq', 'admin', [['search_kb', {'kb': 'faq', 'query': 'refunds'}]]),
    Case('search handbook for holiday policy', 'admin', [['search_kb', {'kb': 'handbook', 'query': 'holiday policy'}]]),
    Case('find passages about exchange rates in faq', 'admin', [['search_kb', {'kb': 'faq', 'query': 'exchange rates'}]]),
    Case('create a knowledge base called policies', 'admin', [['create_kb', {'name': 'policies'}]]),
    Case('make a new knowledge base named product-docs', 'admin', [['create_kb', {'name': 'product-docs'}]]),
    Case('unload smollm2, then load minilm-l6', 'admin', [['unload_model', {'model': 'smollm2-135m-instruct'}], ['load_model', {'model': 'minilm-l6'}]]),
    Case('load support-bot and then show memory', 'admin', [['load_model', {'model': 'support-bot'}], ['ps', {}]]),
    Case('list my datasets and list my models', 'admin', [['list_datasets', {}], ['list_models', {}]]),
    Case('pause {job1} then cancel {job2}', 'admin', [['pause_job', {'job': '{job1}'}], ['cancel_job', {'job': '{job2}'}]]),
    Case('unload gpt-9', 'admin', 'question'),
    Case('train the model', 'admin', 'question'),
    Case('delete everything', 'admin', 'question'),
    Case('make me a sandwich', 'admin', 'question'),
    Case('do the thing with the data', 'admin', 'question'),
    Case('load it', 'admin', 'question'),
    Case('search for refunds', 'admin', 'question'),
    Case('fine-tune smollm2', 'admin', 'question'),
    Case('cancel the job', 'admin', 'question'),
    Case('roll back', 'admin', 'question'),
    Case('unload smollm2', 'reader', 'refused'),
    Case('fine-tune smollm2 on intents', 'reader', 'refused'),
    Case('cancel {job1}', 'reader', 'refused'),
    Case('load minilm-l6', 'trainer', 'refused'),
    Case('show memory usage', 'trainer', 'refused'),
    Case('create a knowledge base called notes', 'reader', 'refused'),
    Case('list my models', 'reader', [['list_models', {}]]),
    Case('train minilm-l6 on reviews', 'trainer', [['train', {'model': 'minilm-l6', 'dataset': 'reviews'}]]),
    Case('search faq for card arrival', 'reader', [['search_kb', {'kb': 'faq', 'query': 'card arrival'}]]),
    Case('create an api key for tenant acme with read and infer scopes', 'admin', [['create_key', {'scopes': ['read', 'infer'], 'tenant': 'acme'}]]),
    Case('make a new key with the train scope named ci-bot', 'admin', [['create_key', {'scopes': ['train'], 'name': 'ci-bot'}]]),
    Case('issue an inference token for tenant shop', 'admin', [['create_key', {'scopes': ['infer'], 'tenant': 'shop'}]]),
    Case('create a new api key', 'admin', 'question'),
    Case('list all the api keys', 'admin', [['list_keys', {}]]),
    Case('which access keys exist?', 'admin', [['list_keys', {}]]),
    Case('revoke key_0123456789abcdef', 'admin', [['revoke_key', {'key': 'key_0123456789abcdef'}]]),
    Case('create an admin key for tenant ops', 'trainer', 'refused'),
    Case('import {dir}/reviews_slice.tsv as sst2-small', 'trainer', [['import_dataset', {'file': '{dir}/reviews_slice.tsv', 'name': 'sst2-small'}]]),
    Case('upload {dir}/reviews_slice.tsv to my datasets', 'trainer', [['import_dataset', {'file': '{dir}/reviews_slice.tsv', 'name': 'reviews_slice'}]]),
    Case('make a dataset called reviews-jsonl from {file1}', 'trainer', [['import_dataset', {'file': '{file1}', 'name': 'reviews-jsonl'}]]),
    Case('import {dir}/missing.csv', 'trainer', 'question'),
    Case('add {dir}/cards.md to the faq knowledge base', 'trainer', [['add_documents', {'kb': 'faq', 'file': '{dir}/cards.md'}]]),
    Case('index {dir}/cards.md in handbook', 'trainer', [['add_documents', {'kb': 'handbook', 'file': '{dir}/cards.md'}]]),
)
