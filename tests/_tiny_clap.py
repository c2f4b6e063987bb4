"""A tiny random LAION-CLAP model (built offline from a small config) for adapter tests."""


def tiny_clap_model():
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    text = ClapTextConfig(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        projection_dim=16,
    )
    audio = ClapAudioConfig(
        hidden_size=32,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        window_size=8,
        patch_embeds_hidden_size=16,
        projection_dim=16,
        enable_fusion=False,
    )
    return ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
