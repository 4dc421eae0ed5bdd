using System.Text;

namespace Lowbit.Engine.Tokenization;

/// <summary>One chat message.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>The built-in chat formats (engine-formats.md §2.5).</summary>
public enum ChatFormat
{
    /// <summary><c>[INST] &lt;&lt;SYS&gt;&gt;…&lt;&lt;/SYS&gt;&gt; … [/INST]</c>; the leading <c>&lt;s&gt;</c> is left to the tokenizer's BOS.</summary>
    Llama2,

    /// <summary><c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\ncontent&lt;|eot_id|&gt;</c> after <c>&lt;|begin_of_text|&gt;</c>.</summary>
    Llama3,

    /// <summary><c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c>.</summary>
    ChatMl,
}

/// <summary>
/// Plain C# renderings of the common chat templates, matching llama.cpp's built-in formats: the prompt text to
/// tokenize (special tokens as text) and, with <c>addGenerationPrompt</c>, the opening of the assistant turn.
/// </summary>
public static class ChatTemplates
{
    /// <summary>Picks the format from a Jinja <c>chat_template</c> by its markers; ChatML when there is none.</summary>
    public static ChatFormat Detect(string? template) => template switch
    {
        null => ChatFormat.ChatMl,
        _ when template.Contains("<|start_header_id|>", StringComparison.Ordinal) => ChatFormat.Llama3,
        _ when template.Contains("[INST]", StringComparison.Ordinal) => ChatFormat.Llama2,
        _ => ChatFormat.ChatMl,
    };

    public static string Render(ChatFormat format, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt) => format switch
    {
        ChatFormat.Llama2 => Llama2(messages, addGenerationPrompt),
        ChatFormat.Llama3 => Llama3(messages, addGenerationPrompt),
        ChatFormat.ChatMl => ChatMl(messages, addGenerationPrompt),
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    /// <summary>The stop strings of a format's assistant turn.</summary>
    public static IReadOnlyList<string> StopStrings(ChatFormat format) => format switch
    {
        ChatFormat.Llama2 => ["</s>"],
        ChatFormat.Llama3 => ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"],
        _ => ["<|im_end|>"],
    };

    private static string Llama2(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var text = new StringBuilder();
        string? system = null;
        var first = true;
        foreach (var message in messages)
        {
            switch (message.Role)
            {
                case "system":
                    system = message.Content;
                    break;
                case "user":
                    if (!first)
                    {
                        text.Append("<s>");
                    }
                    text.Append("[INST] ");
                    if (system is not null)
                    {
                        text.Append("<<SYS>>\n").Append(system).Append("\n<</SYS>>\n\n");
                        system = null;
                    }
                    text.Append(message.Content).Append(" [/INST]");
                    first = false;
                    break;
                case "assistant":
                    text.Append(' ').Append(message.Content).Append(" </s>");
                    break;
                default:
                    throw new EngineInputException($"messages: role '{message.Role}' is not supported by the Llama-2 format; accepted: system, user, assistant");
            }
        }
        _ = addGenerationPrompt; // the open [/INST] already prompts the assistant
        return text.ToString();
    }

    private static string Llama3(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var text = new StringBuilder("<|begin_of_text|>");
        foreach (var message in messages)
        {
            text.Append("<|start_header_id|>").Append(message.Role).Append("<|end_header_id|>\n\n")
                .Append(message.Content.Trim()).Append("<|eot_id|>");
        }
        if (addGenerationPrompt)
        {
            text.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
        }
        return text.ToString();
    }

    private static string ChatMl(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var text = new StringBuilder();
        foreach (var message in messages)
        {
            text.Append("<|im_start|>").Append(message.Role).Append('\n').Append(message.Content).Append("<|im_end|>\n");
        }
        if (addGenerationPrompt)
        {
            text.Append("<|im_start|>assistant\n");
        }
        return text.ToString();
    }
}
