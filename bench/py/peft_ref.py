# PEFT's side of bench/parity/peft.ts, run by refPy in the reference environment (inp and out are defined there).
#   inp['step'] == 'bases':   builds each random base model with transformers and saves it (save_pretrained).
#   inp['step'] == 'peft':    for each case, wraps its base with get_peft_model, randomises every trainable tensor
#                             (lora_A, lora_B, biases, modules_to_save) so the adapter changes the output, saves the
#                             adapter, and writes ref.safetensors beside it: 'logits' of PeftModel on inp['ids'] and
#                             'merged.<key>' for each tensor of merge_and_unload()'s state dict.
#   inp['step'] == 'load':    for each adapter directory retain wrote, PeftModel.from_pretrained over a fresh base,
#                             then the same ref.safetensors.
# Tensors travel in safetensors files; out carries only names and small facts.
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config
from peft import LoraConfig, PeftModel, get_peft_model

CONFIGS = {'llama': LlamaConfig, 'qwen2': Qwen2Config, 'gpt2': GPT2Config}
torch.use_deterministic_algorithms(True)


def base_model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation='eager').eval()


def write_reference(model, directory):
    ids = torch.tensor(inp['ids'])
    with torch.no_grad():
        tensors = {'logits': model(input_ids=ids).logits.float().contiguous()}
        merged = model.merge_and_unload()
        for k, v in merged.state_dict().items():
            tensors['merged.' + k] = v.detach().float().contiguous().clone()
    save_file(tensors, directory + '/ref.safetensors')


if inp['step'] == 'bases':
    for name, spec in inp['bases'].items():
        torch.manual_seed(spec['seed'])
        config = CONFIGS[spec['config']['model_type']](**{k: v for k, v in spec['config'].items() if k != 'model_type'})
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(spec['dir'], safe_serialization=True)
        out[name] = type(model).__name__
elif inp['step'] == 'peft':
    for case in inp['cases']:
        torch.manual_seed(case['seed'])
        model = get_peft_model(base_model(case['base']), LoraConfig(**case['lora']))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * case['scale'])
        model.save_pretrained(case['dir'])
        model.eval()
        write_reference(model, case['dir'])
        out[case['name']] = sorted(n for n, p in model.named_parameters() if p.requires_grad)[:3]
elif inp['step'] == 'load':
    for case in inp['cases']:
        model = PeftModel.from_pretrained(base_model(case['base']), case['dir']).eval()
        write_reference(model, case['dir'])
        out[case['name']] = type(model).__name__
