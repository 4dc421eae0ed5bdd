using System.ClientModel;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using OpenAI;
using OpenAI.Chat;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary><c>serve</c> on a lowbit export whose lm_head is 4-bit too (<c>quantize --quantize-head true</c>), through the official OpenAI client.</summary>
public sealed class ServeQuantizedHeadTests
{
    [Fact]
    public async Task Does_answer_a_chat_with_the_greedy_continuation_of_an_export_whose_head_is_4_bit()
    {
        var root = Directory.CreateTempSubdirectory("serve-int4-head").FullName;
        try
        {
            var directory = FastDecoderTests.Int4Export(root, head: true);
            var tokenizer = new ByteTokenizer();
            var chat = ChatTemplates.Render(ChatFormat.ChatMl, [new Lowbit.Engine.Tokenization.ChatMessage("user", "In the beginning")], addGenerationPrompt: true);
            IReadOnlyList<int> prompt = [ByteTokenizer.Bos, .. tokenizer.Encode(chat)];
            string expected;
            using (var model = LowbitCheckpoint.Load(directory, ScalarType.Float32, CPU))
            {
                Assert.IsType<PackedQuantizedLinear>(model.LmHead);
                var tokens = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 20, StopTokenIds = [ByteTokenizer.Eos] }, CPU);
                expected = tokenizer.Decode(tokens.TakeWhile(t => t != ByteTokenizer.Eos));
            }
            await using var host = await ServeHost.StartAsync(ServeFixture.Options() with { ModelDirectory = directory }, TimeProvider.System, _ => { });
            var client = new ChatClient(ServeFixture.Name, new ApiKeyCredential(ServeFixture.Key),
                new OpenAIClientOptions { Endpoint = new Uri(host.Address, "/v1"), NetworkTimeout = TimeSpan.FromSeconds(60) });

            var completion = (await client.CompleteChatAsync([new UserChatMessage("In the beginning")], new ChatCompletionOptions { MaxOutputTokenCount = 20, Temperature = 0 })).Value;

            Assert.False(string.IsNullOrEmpty(expected));
            Assert.Equal(expected, completion.Content[0].Text);
            Assert.Equal(prompt.Count, completion.Usage.InputTokenCount);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
